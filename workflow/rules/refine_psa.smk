# PSA / AffinityNet (Ahn & Kwak CVPR 2018), one refiner of refine.refiners: CRF scores of
# the CAMs at a low and a high background alpha (psa_labels) -> AffinityNet (train_psa)
# -> random walk on its predicted pair affinities (psa_masks), writing
# pseudo_mask_dir(method, "psa"). Only the preset threshold reaches these rules
# (preset_inputs), never an eval_* result. esol/refiners/psa.py has the details.


rule psa_labels:
    input:
        dataset=prepared("dataset.json"),
        cams=cam_path("{method}", DATASET["train_split"]),
        threshold=preset_inputs,
    output:
        scores=directory(psa_score_dir("{method}")),
    log:
        log_path("psa_labels", "{method}"),
    benchmark:
        benchmark_path("psa_labels", "{method}")
    conda:
        "../envs/esol.yaml"
    threads: DATA_THREADS
    resources:
        mem_mb=attempt_scaled(crf_mem_mb()),
        runtime=attempt_scaled(psa_labels_runtime()),
    params:
        code=code_digest("psa_labels.py"),
        psa=refiner_section("psa"),
        preset=PRESET_PARAMS,
        train_split=DATASET["train_split"],
    script:
        "../scripts/psa_labels.py"


rule train_psa:
    input:
        dataset=prepared("dataset.json"),
        scores=psa_score_dir("{method}"),
        classifier=model_path("classifier"),
    output:
        model=model_path("psa_{method}"),
        history=f"{RESULTS}/models/psa_{{method}}_history.csv",
    log:
        log_path("train_psa", "{method}"),
    benchmark:
        benchmark_path("train_psa", "{method}")
    conda:
        "../envs/esol.yaml"
    threads: TORCH_THREADS
    resources:
        mem_mb=attempt_scaled(psa_mem_mb()),
        runtime=attempt_scaled(psa_runtime()),
        gpu=training_gpus(),
    params:
        **RUN_PARAMS,
        code=code_digest("train_psa.py"),
        psa=refiner_section("psa"),
        model=config["model"],
        checks=config.get("checks"),
        train_split=DATASET["train_split"],
    script:
        "../scripts/train_psa.py"


rule psa_masks:
    input:
        dataset=prepared("dataset.json"),
        model=model_path("psa_{method}"),
        cams=cam_path("{method}", DATASET["train_split"]),
        threshold=preset_inputs,
    output:
        masks=directory(sharded(pseudo_mask_dir("{method}", "psa"))),
    log:
        log_path("psa_masks", f"{{method}}{SHARD_SUFFIX}"),
    benchmark:
        benchmark_path("psa_masks", f"{{method}}{SHARD_SUFFIX}")
    conda:
        "../envs/esol.yaml"
    threads: TORCH_THREADS
    resources:
        mem_mb=attempt_scaled(psa_masks_mem_mb()),
        runtime=attempt_scaled(psa_masks_runtime()),
        gpu=gpus(),
    params:
        **INFERENCE_PARAMS,
        code=code_digest("psa_masks.py"),
        psa=refiner_section("psa"),
        preset=PRESET_PARAMS,
        train_split=DATASET["train_split"],
        shard=shard_of,
    script:
        "../scripts/psa_masks.py"


if SHARDS > 1:

    rule gather_psa_masks:
        input:
            dataset=prepared("dataset.json"),
            shards=shard_parts(pseudo_mask_dir("{method}", "psa")),
        output:
            labels=directory(pseudo_mask_dir("{method}", "psa")),
        log:
            log_path("gather_psa_masks", "{method}"),
        benchmark:
            benchmark_path("gather_psa_masks", "{method}")
        conda:
            "../envs/esol.yaml"
        threads: 1
        resources:
            mem_mb=attempt_scaled(gather_mem_mb()),
            runtime=attempt_scaled(gather_runtime),
        params:
            code=code_digest("gather_labels.py"),
            split=DATASET["train_split"],
        script:
            "../scripts/gather_labels.py"
