"""Rule ir_labels: IRN's confident foreground/background labels (band = 255) for training."""

from esol.refine import make_ir_labels
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    make_ir_labels(snakemake.config, snakemake.input.dataset, snakemake.input.cams,  # noqa: F821
                   snakemake.output.labels, threads=snakemake.threads,  # noqa: F821
                   seed_json=snakemake.input.seed)  # noqa: F821
