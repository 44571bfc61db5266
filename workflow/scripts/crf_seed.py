"""Rule crf_seed: a method's thresholded seeds after the dense CRF, as palette PNGs."""

from esol.refine import crf_seeds
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    crf_seeds(snakemake.config, snakemake.input.dataset, snakemake.input.cams,  # noqa: F821
              snakemake.wildcards.split, snakemake.input.seed,  # noqa: F821
              snakemake.output.labels, threads=snakemake.threads)  # noqa: F821
