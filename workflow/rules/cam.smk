# With config shards > 1, make_cam writes shard {shard} of N (each its own job) and
# gather_cams joins them into the file an unsharded make_cam writes.


rule make_cam:
    input:
        dataset=prepared("dataset.json"),
        checkpoint=method_checkpoint,
    output:
        cams=cam_output(),
    log:
        log_path("make_cam", "{method}", "{split}" + SHARD_SUFFIX),
    benchmark:
        benchmark_path("make_cam", "{method}", "{split}" + SHARD_SUFFIX)
    conda:
        "../envs/esol.yaml"
    threads: TORCH_THREADS
    resources:
        mem_mb=attempt_scaled(cam_mem_mb()),
        runtime=attempt_scaled(cam_runtime),
        gpu=gpus(),
    params:
        **INFERENCE_PARAMS,
        code=code_digest("make_cam.py"),
        method=method_spec,
        cam=config["cam"],
        shard=shard_of,
        clip_beta=method_clip_beta,
    script:
        "../scripts/make_cam.py"


if SHARDS > 1:

    # AdvCAM methods write their CAM file whole (make_advcam is not sharded).
    ruleorder: make_advcam > gather_cams

    rule gather_cams:
        input:
            dataset=prepared("dataset.json"),
            shards=cam_shards,
        output:
            cams=cam_path("{method}", "{split}"),
        log:
            log_path("gather_cams", "{method}", "{split}"),
        benchmark:
            benchmark_path("gather_cams", "{method}", "{split}")
        conda:
            "../envs/esol.yaml"
        threads: 1
        resources:
            mem_mb=attempt_scaled(eval_mem_mb()),
            runtime=attempt_scaled(eval_runtime),
        params:
            code=code_digest("gather_cams.py"),
        script:
            "../scripts/gather_cams.py"


# External seed methods (config methods.<m>.external): their CAM file of a split comes
# from a folder of IRN .npy files or an HDF5 CAM file, imported and checked once; from
# there on they are methods like any other. Chosen over our networks' producers.
ruleorder: import_cams > make_cam


if SHARDS > 1:

    ruleorder: import_cams > gather_cams


rule import_cams:
    input:
        dataset=prepared("dataset.json"),
    output:
        cams=cam_path("{method}", "{split}"),
    log:
        log_path("import_cams", "{method}", "{split}"),
    benchmark:
        benchmark_path("import_cams", "{method}", "{split}")
    wildcard_constraints:
        method="|".join(re.escape(m) for m in EXTERNAL_METHODS) or "no_external_method",
    conda:
        "../envs/esol.yaml"
    threads: 1
    resources:
        mem_mb=attempt_scaled(eval_mem_mb()),
        runtime=attempt_scaled(eval_runtime),
    params:
        code=code_digest("import_cams.py"),
        source=external_source,
        # Names, sizes and mtimes of the source's files: an edit there reimports.
        manifest=external_manifest,
    script:
        "../scripts/import_cams.py"


# Evaluation: the oracle threshold (best against the split's own masks) and the
# figures at the preset one. Nothing that trains reads its output.
rule eval_seed:
    input:
        dataset=prepared("dataset.json"),
        cams=seed_cams,
        threshold=preset_inputs,
    output:
        **seed_outputs("{method}", "{split}"),
    log:
        log_path("eval_seed", "{method}", "{split}"),
    benchmark:
        benchmark_path("eval_seed", "{method}", "{split}")
    conda:
        "../envs/esol.yaml"
    threads: 1
    resources:
        mem_mb=attempt_scaled(eval_mem_mb()),
        runtime=attempt_scaled(eval_runtime),
    params:
        code=code_digest("eval_seed.py"),
        thresholds=config["eval"]["thresholds"],
        threshold=config["refine"]["threshold"],
    script:
        "../scripts/eval_seed.py"


# The preset threshold of refine.threshold: tuned, chosen on the labelled tuning split,
# disjoint from every pseudo-labelled or evaluated split (checked in the script). Not an
# eval_* rule: it feeds ir_labels and pseudo_masks, so it must read no evaluated masks.
if TUNING_SPLIT:

    rule tune_threshold:
        input:
            dataset=prepared("dataset.json"),
            cams=cam_path("{method}", TUNING_SPLIT),
        output:
            **tuned_outputs("{method}"),
        log:
            log_path("tune_threshold", "{method}"),
        benchmark:
            benchmark_path("tune_threshold", "{method}")
        conda:
            "../envs/esol.yaml"
        threads: 1
        resources:
            mem_mb=attempt_scaled(eval_mem_mb()),
            runtime=attempt_scaled(tune_runtime),
        params:
            code=code_digest("tune_threshold.py"),
            thresholds=config["eval"]["thresholds"],
            tuning_split=TUNING_SPLIT,
        script:
            "../scripts/tune_threshold.py"
