# The paper's contribution: the Expansion and Shrinkage stages (sections 3.2-3.3).


rule train_expansion:
    input:
        dataset=prepared("dataset.json"),
        classifier=model_path("classifier"),
    output:
        model=model_path("expansion_{clip}"),
        history=f"{RESULTS}/models/expansion_{{clip}}_history.csv",
    params:
        expansion=config["expansion"],
        switches=expansion_switches,
        **RUN_PARAMS,
    log:
        log_path("train_expansion", "{clip}"),
    benchmark:
        benchmark_path("train_expansion", "{clip}")
    threads: TORCH_THREADS
    resources:
        mem_mb=stage_mem_mb("expansion"),
        runtime=stage_runtime("expansion"),
        gpu=gpus(),
    conda:
        "../envs/esol.yaml"
    script:
        "../scripts/train_expansion.py"


rule train_shrinkage:
    input:
        dataset=prepared("dataset.json"),
        expansion=shrinkage_input,
    output:
        model=model_path("shrinkage_{method}"),
        history=f"{RESULTS}/models/shrinkage_{{method}}_history.csv",
    params:
        shrinkage=config["shrinkage"],
        switches=method_spec,
        clip_beta=config["expansion"]["clip_beta"],
        **RUN_PARAMS,
    log:
        log_path("train_shrinkage", "{method}"),
    benchmark:
        benchmark_path("train_shrinkage", "{method}")
    threads: TORCH_THREADS
    resources:
        mem_mb=stage_mem_mb("shrinkage"),
        runtime=stage_runtime("shrinkage"),
        gpu=gpus(),
    conda:
        "../envs/esol.yaml"
    script:
        "../scripts/train_shrinkage.py"


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
    params:
        methods=config["methods"],
        figures=config["figures"],
    log:
        log_path("compare_seeds"),
    benchmark:
        benchmark_path("compare_seeds")
    threads: 1
    resources:
        mem_mb=eval_mem_mb(),
        runtime=report_runtime(),
    conda:
        "../envs/esol.yaml"
    script:
        "../scripts/compare_seeds.py"
