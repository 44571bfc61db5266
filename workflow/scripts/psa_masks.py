"""Rule psa_masks: random walk of a method's CAMs on its AffinityNet's pair affinities, as
palette PNGs (maps calibrated from the preset threshold, never the oracle one)."""

from esol.refine import single_path
from esol.refiners.psa import make_psa_masks
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    make_psa_masks(snakemake.params.psa, snakemake.input.dataset,  # noqa: F821
                   snakemake.input.model, snakemake.input.cams,  # noqa: F821
                   snakemake.output.masks, split=snakemake.params.train_split,  # noqa: F821
                   threshold_json=single_path(snakemake.input.threshold),  # noqa: F821
                   device=snakemake.params.device, amp=snakemake.params.amp,  # noqa: F821
                   **snakemake.params.preset,  # noqa: F821
                   shard=snakemake.params.shard)  # noqa: F821
