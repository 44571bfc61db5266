"""Rule train_psa: AffinityNet of one method, from its PSA affinity labels."""

from esol.refiners.psa import train_psa
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    train_psa(snakemake.params.psa, snakemake.input.dataset,  # noqa: F821
              snakemake.input.scores, snakemake.input.classifier,  # noqa: F821
              snakemake.output.model, snakemake.output.history,  # noqa: F821
              train_split=snakemake.params.train_split,  # noqa: F821
              model=snakemake.params.model, seed=snakemake.params.seed,  # noqa: F821
              device=snakemake.params.device, amp=snakemake.params.amp,  # noqa: F821
              checks=snakemake.params.checks)  # noqa: F821
