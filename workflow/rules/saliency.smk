# Saliency-combined pseudo masks (the paper's Table 4, rows "with S"; esol/saliency.py):
# each segmentation method's pseudo masks, non-salient pixels made background and
# salient background pixels ignored (clovaai/WSSS-BED's rule, docs/saliency.md), train
# a second DeepLab, label source <method>-sal. The maps are the user's folder
# (saliency.source) or made here by a classical detector with no weights.


if SALIENCY_ROWS and SALIENCY["source"] == "classical":

    rule saliency_maps:
        input:
            dataset=prepared("dataset.json"),
        output:
            maps=directory(saliency_dir()),
        log:
            log_path("saliency_maps"),
        benchmark:
            benchmark_path("saliency_maps")
        conda:
            "../envs/esol.yaml"
        threads: DATA_THREADS
        resources:
            mem_mb=attempt_scaled(data_mem_mb()),
            runtime=attempt_scaled(saliency_runtime(SALIENCY_SECONDS_PER_PX)),
        params:
            code=code_digest("saliency_maps.py"),
            split=DATASET["train_split"],
        script:
            "../scripts/saliency_maps.py"


if SALIENCY_ROWS:

    rule saliency_masks:
        input:
            dataset=prepared("dataset.json"),
            masks=pseudo_mask_dir("{method}", SEGMENTATION_REFINER),
            saliency=saliency_dir(),
        output:
            masks=directory(saliency_masks_dir("{method}")),
        log:
            log_path("saliency_masks", "{method}"),
        benchmark:
            benchmark_path("saliency_masks", "{method}")
        conda:
            "../envs/esol.yaml"
        threads: DATA_THREADS
        resources:
            mem_mb=attempt_scaled(data_mem_mb()),
            runtime=attempt_scaled(saliency_runtime(3 * DECODE_SECONDS_PER_PX)),
        params:
            code=code_digest("saliency_masks.py"),
            split=DATASET["train_split"],
            saliency=saliency_dir(),
            threshold=SALIENCY["threshold"],
        script:
            "../scripts/saliency_masks.py"
