"""Rule ir_labels: IRN's confident foreground/background labels (band = 255) for training,
on maps calibrated from the preset threshold (never the oracle one)."""

from esol.refine import make_ir_labels, single_path
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    make_ir_labels(snakemake.config, snakemake.input.dataset, snakemake.input.cams,  # noqa: F821
                   snakemake.output.labels, threads=snakemake.threads,  # noqa: F821
                   threshold_json=single_path(snakemake.input.threshold),  # noqa: F821
                   shard=snakemake.params.shard)  # noqa: F821
