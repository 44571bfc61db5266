# Refinement of the seeds (the paper's Table 1): dense CRF on the seeds, and IRN
# (Ahn et al. CVPR 2019) from confident seed regions to random-walk pseudo masks.
# Every method in config refine.methods gets Seed / CRF / Mask from one CAM file.
# What trains (ir_labels -> train_irn -> pseudo_masks -> DeepLab) reads only the preset
# threshold (preset_inputs: rule tune_threshold on dataset.tuning_split, or a number
# in config), never an eval_* result: no mask of the images it labels reaches it.


# Evaluation only (Table 1's CRF column), at the oracle and at the preset threshold.
# With config shards > 1, shard {shard} of N per job, joined by gather_crf_seed.
rule crf_seed:
    input:
        dataset=prepared("dataset.json"),
        cams=seed_cams,
        threshold=crf_threshold_inputs,
    output:
        labels=directory(sharded(crf_dir("{method}", "{split}", "{choice}"))),
    log:
        log_path("crf_seed", "{method}", "{choice}", f"{{split}}{SHARD_SUFFIX}"),
    benchmark:
        benchmark_path("crf_seed", "{method}", "{choice}", f"{{split}}{SHARD_SUFFIX}")
    conda:
        "../envs/esol.yaml"
    threads: DATA_THREADS
    resources:
        mem_mb=attempt_scaled(crf_mem_mb()),
        runtime=attempt_scaled(crf_runtime),
    params:
        code=code_digest("crf_seed.py"),
        crf=config["refine"]["crf"],
        threshold=config["refine"]["threshold"],
        shard=shard_of,
    script:
        "../scripts/crf_seed.py"


if SHARDS > 1:

    rule gather_crf_seed:
        input:
            dataset=prepared("dataset.json"),
            shards=shard_parts(crf_dir("{method}", "{split}", "{choice}")),
        output:
            labels=directory(crf_dir("{method}", "{split}", "{choice}")),
        log:
            log_path("gather_crf_seed", "{method}", "{choice}", "{split}"),
        benchmark:
            benchmark_path("gather_crf_seed", "{method}", "{choice}", "{split}")
        conda:
            "../envs/esol.yaml"
        threads: 1
        resources:
            mem_mb=attempt_scaled(gather_mem_mb()),
            runtime=attempt_scaled(gather_runtime),
        params:
            code=code_digest("gather_labels.py"),
            split=split_of,
        script:
            "../scripts/gather_labels.py"


rule eval_crf:
    input:
        dataset=prepared("dataset.json"),
        labels=crf_dir("{method}", "{split}", "{choice}"),
        threshold=crf_threshold_inputs,
    output:
        json=crf_json("{method}", "{split}", "{choice}"),
    log:
        log_path("eval_crf", "{method}", "{choice}", "{split}"),
    benchmark:
        benchmark_path("eval_crf", "{method}", "{choice}", "{split}")
    conda:
        "../envs/esol.yaml"
    threads: 1
    resources:
        mem_mb=attempt_scaled(eval_mem_mb()),
        runtime=attempt_scaled(eval_runtime),
    params:
        code=code_digest("eval_crf.py"),
        threshold=config["refine"]["threshold"],
    script:
        "../scripts/eval_crf.py"


rule ir_labels:
    input:
        dataset=prepared("dataset.json"),
        cams=cam_path("{method}", DATASET["train_split"]),
        threshold=preset_inputs,
    output:
        labels=directory(ir_label_dir("{method}")),
    log:
        log_path("ir_labels", "{method}"),
    benchmark:
        benchmark_path("ir_labels", "{method}")
    conda:
        "../envs/esol.yaml"
    threads: DATA_THREADS
    resources:
        mem_mb=attempt_scaled(crf_mem_mb()),
        runtime=attempt_scaled(ir_labels_runtime()),
    params:
        code=code_digest("ir_labels.py"),
        calibrate_to=config["irn"]["calibrate_to"],
        threshold=config["refine"]["threshold"],
        labels=config["irn"]["labels"],
        crf=config["refine"]["crf"],
        train_split=DATASET["train_split"],
    script:
        "../scripts/ir_labels.py"


rule train_irn:
    input:
        dataset=prepared("dataset.json"),
        labels=ir_label_dir("{method}"),
        classifier=model_path("classifier"),
    output:
        model=model_path("irn_{method}"),
        history=f"{RESULTS}/models/irn_{{method}}_history.csv",
    log:
        log_path("train_irn", "{method}"),
    benchmark:
        benchmark_path("train_irn", "{method}")
    conda:
        "../envs/esol.yaml"
    threads: TORCH_THREADS
    resources:
        mem_mb=attempt_scaled(irn_mem_mb()),
        runtime=attempt_scaled(irn_runtime()),
        gpu=training_gpus(),
    params:
        **RUN_PARAMS,
        code=code_digest("train_irn.py"),
        processes=config["gpus_per_job"],
        train=config["irn"]["train"],
        model=config["model"],
        train_split=DATASET["train_split"],
    script:
        "../scripts/train_irn.py"


rule pseudo_masks:
    input:
        dataset=prepared("dataset.json"),
        model=model_path("irn_{method}"),
        cams=cam_path("{method}", DATASET["train_split"]),
        threshold=preset_inputs,
    output:
        masks=directory(pseudo_mask_dir("{method}")),
    log:
        log_path("pseudo_masks", "{method}"),
    benchmark:
        benchmark_path("pseudo_masks", "{method}")
    conda:
        "../envs/esol.yaml"
    threads: TORCH_THREADS
    resources:
        mem_mb=attempt_scaled(pseudo_masks_mem_mb()),
        runtime=attempt_scaled(pseudo_masks_runtime()),
        gpu=gpus(),
    params:
        **INFERENCE_PARAMS,
        code=code_digest("pseudo_masks.py"),
        calibrate_to=config["irn"]["calibrate_to"],
        threshold=config["refine"]["threshold"],
        random_walk=config["irn"]["random_walk"],
        train_split=DATASET["train_split"],
    script:
        "../scripts/pseudo_masks.py"


rule eval_mask:
    input:
        dataset=prepared("dataset.json"),
        masks=pseudo_mask_dir("{method}"),
    output:
        json=mask_json("{method}", "{split}"),
    log:
        log_path("eval_mask", "{method}", "{split}"),
    benchmark:
        benchmark_path("eval_mask", "{method}", "{split}")
    conda:
        "../envs/esol.yaml"
    threads: 1
    resources:
        mem_mb=attempt_scaled(eval_mem_mb()),
        runtime=attempt_scaled(eval_runtime),
    params:
        code=code_digest("eval_mask.py"),
        bg_threshold=config["irn"]["random_walk"]["bg_threshold"],
        calibrate_to=config["irn"]["calibrate_to"],
    script:
        "../scripts/eval_mask.py"


rule table1:
    input:
        **table1_inputs(),
        dataset=prepared("dataset.json"),
    output:
        **table1_outputs(),
    log:
        log_path("table1"),
    benchmark:
        benchmark_path("table1")
    conda:
        "../envs/esol.yaml"
    threads: 1
    resources:
        mem_mb=attempt_scaled(eval_mem_mb()),
        runtime=attempt_scaled(report_runtime()),
    params:
        code=code_digest("table1.py"),
        methods=REFINE_METHODS,
        grid_images=config["refine"]["grid_images"],
    script:
        "../scripts/table1.py"
