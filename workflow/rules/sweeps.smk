# Figure 6: sensitivity sweeps. Each sweep's variants are ordinary seed methods (their
# CAMs and eval_seed come from rules/cam.smk); this rule gathers them into one panel.


def sweep_outputs(sweep):
    stem = f"{RESULTS}/sweeps/{sweep}"
    return {"png": f"{stem}.png", "csv": f"{stem}.csv"}


def sweep_methods(wildcards):
    return [m for _, m in SWEEP_MEMBERS[wildcards.sweep]]


def sweep_baseline():
    """Table 6's baseline (every switch off): its best threshold is Fig. 6's t0."""
    return next(
        (m for m, s in config["methods"].items() if not any(switches(s).values())), None
    )


wildcard_constraints:
    sweep="|".join(re.escape(s) for s in SWEEPS) or "none",


rule sweep_figure:
    input:
        metrics=lambda wc: [seed_outputs(m)["json"] for m in sweep_methods(wc)],
        curves=lambda wc: [seed_outputs(m)["csv"] for m in sweep_methods(wc)],
        baseline=[seed_outputs(sweep_baseline())["json"]] if sweep_baseline() else [],
    output:
        **sweep_outputs("{sweep}"),
    params:
        sweep=lambda wc: SWEEPS[wc.sweep],
        members=lambda wc: SWEEP_MEMBERS[wc.sweep],
    log:
        log_path("sweep_figure", "{sweep}"),
    benchmark:
        benchmark_path("sweep_figure", "{sweep}")
    threads: 1
    resources:
        mem_mb=eval_mem_mb(),
        runtime=report_runtime(),
    conda:
        "../envs/esol.yaml"
    script:
        "../scripts/sweep_figure.py"
