"""Rule gather_predictions: predict_segmentation's shard folders (without and with CRF)
joined into the two folders an unsharded run writes."""

from esol.segmentation.predict import gather_predictions
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    gather_predictions(snakemake.config, snakemake.input.dataset,  # noqa: F821
                       snakemake.wildcards.split, snakemake.input.raw,  # noqa: F821
                       snakemake.input.crf, snakemake.output.raw, snakemake.output.crf)  # noqa: F821
