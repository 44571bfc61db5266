"""Rule pseudo_masks: random walk of a method's CAMs on its IRN boundaries, as palette PNGs
(maps calibrated from the preset threshold, never the oracle one)."""

from esol.irn.stage import make_pseudo_masks
from esol.refine import single_path
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    make_pseudo_masks(snakemake.config, snakemake.input.dataset, snakemake.input.model,  # noqa: F821
                      snakemake.input.cams, snakemake.output.masks,  # noqa: F821
                      threshold_json=single_path(snakemake.input.threshold),  # noqa: F821
                      shard=snakemake.params.shard)  # noqa: F821
