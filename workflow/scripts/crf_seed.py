"""Rule crf_seed: a method's thresholded seeds after the dense CRF, as palette PNGs
(at the oracle or the preset threshold: wildcard choice), or one shard of them.
Evaluation only."""

from esol.refine import crf_seeds, single_path
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    crf_seeds(snakemake.config, snakemake.input.dataset, snakemake.input.cams,  # noqa: F821
              snakemake.wildcards.split, snakemake.wildcards.choice,  # noqa: F821
              single_path(snakemake.input.threshold),  # noqa: F821
              snakemake.output.labels, threads=snakemake.threads,  # noqa: F821
              shard=snakemake.params.shard)  # noqa: F821
