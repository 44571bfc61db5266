"""Rule saliency_masks: a method's pseudo masks combined with the saliency maps (non-salient
pixels background, salient background pixels ignored; esol/saliency.py)."""

from esol.saliency import make_saliency_masks
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    make_saliency_masks(snakemake.input.dataset, snakemake.params.split,  # noqa: F821
                        snakemake.input.masks, snakemake.params.saliency,  # noqa: F821
                        snakemake.params.threshold, snakemake.output.masks,  # noqa: F821
                        threads=snakemake.threads)  # noqa: F821
