# The paper's contribution: the Expansion and Shrinkage stages (sections 3.2-3.3).


rule train_expansion:
    input:
        dataset=prepared("dataset.json"),
        classifier=model_path("classifier"),
    output:
        model=model_path("expansion_{etag}"),
        history=f"{RESULTS}/models/expansion_{{etag}}_history.csv",
    log:
        log_path("train_expansion", "{etag}"),
    benchmark:
        benchmark_path("train_expansion", "{etag}")
    conda:
        "../envs/esol.yaml"
    threads: TORCH_THREADS
    resources:
        mem_mb=attempt_scaled(stage_mem_mb("expansion")),
        runtime=attempt_scaled(stage_runtime("expansion")),
        gpu=training_gpus(),
    params:
        **RUN_PARAMS,
        code=code_digest("train_expansion.py"),
        processes=config["gpus_per_job"],
        expansion=expansion_params,
        switches=expansion_switches,
    script:
        "../scripts/train_expansion.py"


rule train_shrinkage:
    input:
        dataset=prepared("dataset.json"),
        expansion=shrinkage_input,
    output:
        model=model_path("shrinkage_{method}"),
        history=f"{RESULTS}/models/shrinkage_{{method}}_history.csv",
    log:
        log_path("train_shrinkage", "{method}"),
    benchmark:
        benchmark_path("train_shrinkage", "{method}")
    conda:
        "../envs/esol.yaml"
    threads: TORCH_THREADS
    resources:
        mem_mb=attempt_scaled(stage_mem_mb("shrinkage")),
        runtime=attempt_scaled(stage_runtime("shrinkage")),
        gpu=training_gpus(),
    params:
        **RUN_PARAMS,
        code=code_digest("train_shrinkage.py"),
        processes=config["gpus_per_job"],
        shrinkage=shrinkage_params,
        clip_beta=method_clip_beta,
        switches=method_spec,
    script:
        "../scripts/train_shrinkage.py"


# AdvCAM's seeds (Lee et al. CVPR'21, esol/advcam.py): the same CAM file format as
# make_cam, so eval_seed, the CRF and IRN read them; chosen over make_cam for the
# methods with the advcam switch.
ruleorder: make_advcam > make_cam


rule make_advcam:
    input:
        dataset=prepared("dataset.json"),
        checkpoint=model_path("classifier"),
    output:
        cams=cam_path("{method}", "{split}"),
    log:
        log_path("make_advcam", "{method}", "{split}"),
    benchmark:
        benchmark_path("make_advcam", "{method}", "{split}")
    wildcard_constraints:
        method="|".join(re.escape(m) for m in ADVCAM_METHODS) or "no_advcam_method",
    conda:
        "../envs/esol.yaml"
    threads: TORCH_THREADS
    resources:
        # Forward + backward through the backbone per step and class: training memory.
        mem_mb=attempt_scaled(stage_mem_mb("classifier")),
        # adv_iter steps of ~3 forward passes each, for ~2 classes per image.
        runtime=attempt_scaled(advcam_runtime),
        gpu=gpus(),
    params:
        code=code_digest("make_advcam.py"),
        cam=config["cam"],
        advcam=config.get("advcam"),
    script:
        "../scripts/make_advcam.py"


rule compare_seeds:
    input:
        dataset=prepared("dataset.json"),
        metrics=expand(seed_outputs("{method}")["json"], method=METHODS),
        sweeps=expand(seed_outputs("{method}")["csv"], method=METHODS),
        cams=seed_cam_list(),
    output:
        table_md=f"{RESULTS}/seeds/table6.md",
        table_csv=f"{RESULTS}/seeds/table6.csv",
        recall_png=f"{RESULTS}/seeds/recall_vs_threshold.png",
        grid_png=f"{RESULTS}/seeds/fig5_grid.png",
    log:
        log_path("compare_seeds"),
    benchmark:
        benchmark_path("compare_seeds")
    conda:
        "../envs/esol.yaml"
    threads: 1
    resources:
        mem_mb=attempt_scaled(eval_mem_mb()),
        runtime=attempt_scaled(report_runtime()),
    params:
        code=code_digest("compare_seeds.py"),
        methods=METHOD_SPECS,
        figures=config["figures"],
        paper=DATASET["source"] == "voc",
    script:
        "../scripts/compare_seeds.py"


# The paper's Table 5: pseudo-label generation time per method, summed from the benchmark
# files of the jobs in its chain (esol/timing.py). In the default target when a method
# uses AdvCAM (the comparison the table makes); any run can ask for it.
rule table5:
    input:
        table5_inputs(),
    output:
        **table5_outputs(),
    log:
        log_path("table5"),
    conda:
        "../envs/esol.yaml"
    threads: 1
    resources:
        mem_mb=attempt_scaled(eval_mem_mb()),
        runtime=attempt_scaled(report_runtime()),
    params:
        code=code_digest("table5.py"),
        chains={m: table5_chain(m) for m in METHODS},
        kinds={m: table5_kind(m) for m in METHODS},
        cam_splits={
            m: os.path.basename(seed_cam_path(m, DATASET["seed_split"]))[: -len(".h5")]
            for m in METHODS
        },
        device=config["device"],
    script:
        "../scripts/table5.py"
