# Refinement of the seeds (the paper's Table 1), the rules every refiner shares: dense
# CRF on the seeds (Table 1's CRF column), the evaluation of a refiner's pseudo masks
# ({refiner} wildcard) and Table 1. Each refiner of config refine.refiners has its own
# rule file, refine_<name>.smk, writing pseudo_mask_dir(method, refiner); every method
# of refine.methods gets Seed / CRF / one Mask per refiner from one CAM file.
# What trains (a refiner's labels -> its network -> pseudo masks -> DeepLab) reads only
# the preset threshold (preset_inputs: rule tune_threshold on dataset.tuning_split, or
# a number in config), never an eval_* result: no mask of the images it labels reaches it.


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


rule eval_mask:
    input:
        dataset=prepared("dataset.json"),
        masks=pseudo_mask_dir("{method}", "{refiner}"),
    output:
        json=mask_json("{method}", "{refiner}", "{split}"),
    log:
        log_path("eval_mask", "{method}", "{refiner}", "{split}"),
    benchmark:
        benchmark_path("eval_mask", "{method}", "{refiner}", "{split}")
    conda:
        "../envs/esol.yaml"
    threads: 1
    resources:
        mem_mb=attempt_scaled(eval_mem_mb()),
        runtime=attempt_scaled(eval_runtime),
    params:
        code=code_digest("eval_mask.py"),
        refiner=mask_threshold_params,
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
        refiners=REFINERS,
        grid_images=config["refine"]["grid_images"],
    script:
        "../scripts/table1.py"
