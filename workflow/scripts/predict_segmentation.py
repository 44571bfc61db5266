"""Rule predict_segmentation: multi-scale + flip predictions of one split (or one shard of
it), without and with CRF."""

from esol.segmentation.predict import predict_segmentation
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    predict_segmentation(snakemake.config, snakemake.input.model,  # noqa: F821
                         snakemake.input.dataset, snakemake.wildcards.split,  # noqa: F821
                         snakemake.output.raw, snakemake.output.crf,  # noqa: F821
                         workers=snakemake.threads, shard=snakemake.params.shard)  # noqa: F821
