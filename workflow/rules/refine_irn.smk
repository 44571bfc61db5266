# IRN (Ahn et al. CVPR 2019), one refiner of refine.refiners: confident seed regions
# (ir_labels) -> inter-pixel relation network (train_irn) -> random walk on its boundary
# map (pseudo_masks), writing pseudo_mask_dir(method, "irn"). Only the preset threshold
# reaches these rules (preset_inputs), never an eval_* result.


rule ir_labels:
    input:
        dataset=prepared("dataset.json"),
        cams=cam_path("{method}", DATASET["train_split"]),
        threshold=preset_inputs,
    output:
        labels=directory(sharded(ir_label_dir("{method}"))),
    log:
        log_path("ir_labels", f"{{method}}{SHARD_SUFFIX}"),
    benchmark:
        benchmark_path("ir_labels", f"{{method}}{SHARD_SUFFIX}")
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
        shard=shard_of,
    script:
        "../scripts/ir_labels.py"


if SHARDS > 1:

    rule gather_ir_labels:
        input:
            dataset=prepared("dataset.json"),
            shards=shard_parts(ir_label_dir("{method}")),
        output:
            labels=directory(ir_label_dir("{method}")),
        log:
            log_path("gather_ir_labels", "{method}"),
        benchmark:
            benchmark_path("gather_ir_labels", "{method}")
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
        masks=directory(sharded(pseudo_mask_dir("{method}", "irn"))),
    log:
        log_path("pseudo_masks", f"{{method}}{SHARD_SUFFIX}"),
    benchmark:
        benchmark_path("pseudo_masks", f"{{method}}{SHARD_SUFFIX}")
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
        shard=shard_of,
    script:
        "../scripts/pseudo_masks.py"


if SHARDS > 1:

    rule gather_pseudo_masks:
        input:
            dataset=prepared("dataset.json"),
            shards=shard_parts(pseudo_mask_dir("{method}", "irn")),
        output:
            labels=directory(pseudo_mask_dir("{method}", "irn")),
        log:
            log_path("gather_pseudo_masks", "{method}"),
        benchmark:
            benchmark_path("gather_pseudo_masks", "{method}")
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
