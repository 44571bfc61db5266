"""Rule sweep_figure: one Figure 6-style panel and its CSV per sweep."""

from esol.sweeps import sweep_figure
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    sweep_figure(snakemake.params.sweep, snakemake.params.members,  # noqa: F821
                 snakemake.input.metrics, snakemake.input.curves,  # noqa: F821
                 snakemake.input.baseline[0] if snakemake.input.baseline else None,  # noqa: F821
                 snakemake.output.csv, snakemake.output.png)  # noqa: F821
