"""Rule report: every evaluation of the run in results/<dataset>/report/report.md."""

from esol.run_report import build_report
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    i = snakemake.input  # noqa: F821
    build_report(config=snakemake.config, dataset_json=i.dataset,  # noqa: F821
                 segmentation=i.segmentation, predictions=i.predictions,
                 sources=snakemake.params.sources, seed_metrics=i.seed_metrics,  # noqa: F821
                 sweeps=i.sweeps, table6_md=i.table6_md, table6_csv=i.table6_csv,
                 recall_png=i.recall_png, fig5_png=i.fig5_png,
                 table1={k: i.get(k) for k in ("table_md", "table_csv", "grid_png") if i.get(k)},
                 histories=i.histories, rule_order=snakemake.params.rule_order,  # noqa: F821
                 table5_md=i.get("table5_md"),
                 sweeps_figures={s: {"png": i[f"sweep_png_{s}"], "csv": i[f"sweep_csv_{s}"]}
                                 for s in snakemake.params.sweeps},  # noqa: F821
                 benchmarks=snakemake.params.benchmarks,  # noqa: F821
                 out=dict(snakemake.output.items()))  # noqa: F821
