"""Rule saliency_maps: the classical saliency detector's map of every training image."""

from esol.saliency import make_saliency_maps
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    make_saliency_maps(snakemake.input.dataset, snakemake.params.split,  # noqa: F821
                       snakemake.output.maps, threads=snakemake.threads)  # noqa: F821
