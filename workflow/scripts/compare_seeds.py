"""Rule compare_seeds: Table 6 (seed quality per method), Fig. 3d recall plot, Fig. 5 grid."""

from esol.report import compare_seeds
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    compare_seeds(snakemake.params.methods, snakemake.params.figures,  # noqa: F821
                  snakemake.input.dataset, snakemake.input.metrics,  # noqa: F821
                  snakemake.input.sweeps, snakemake.input.cams, **snakemake.output,  # noqa: F821
                  paper=snakemake.params.paper)  # noqa: F821
