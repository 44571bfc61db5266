# Figure 6: sensitivity sweeps. Each sweep's variants are ordinary seed methods (their
# CAMs and eval_seed come from rules/cam.smk); this rule gathers them into one panel.


wildcard_constraints:
    sweep="|".join(re.escape(s) for s in SWEEPS) or "none",


rule sweep_figure:
    input:
        metrics=sweep_metrics,
        curves=sweep_curves,
        baseline=[seed_outputs(sweep_baseline())["json"]] if sweep_baseline() else [],
    output:
        **sweep_outputs("{sweep}"),
    log:
        log_path("sweep_figure", "{sweep}"),
    benchmark:
        benchmark_path("sweep_figure", "{sweep}")
    conda:
        "../envs/esol.yaml"
    threads: 1
    resources:
        mem_mb=attempt_scaled(eval_mem_mb()),
        runtime=attempt_scaled(report_runtime()),
    params:
        code=code_digest("sweep_figure.py"),
        sweep=sweep_setting,
        members=sweep_members,
    script:
        "../scripts/sweep_figure.py"
