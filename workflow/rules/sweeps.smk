# Figure 6: sensitivity sweeps. Each sweep's variants are ordinary seed methods (their
# CAMs and eval_seed come from rules/cam.smk); this rule gathers them into one panel.


wildcard_constraints:
    sweep="|".join(re.escape(s) for s in SWEEPS) or "none",


rule sweep_figure:
    input:
        metrics=lambda wc: [seed_outputs(m)["json"] for m in sweep_methods(wc)],
        curves=lambda wc: [seed_outputs(m)["csv"] for m in sweep_methods(wc)],
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
        mem_mb=eval_mem_mb(),
        runtime=report_runtime(),
    params:
        sweep=lambda wc: SWEEPS[wc.sweep],
        members=lambda wc: SWEEP_MEMBERS[wc.sweep],
    script:
        "../scripts/sweep_figure.py"
