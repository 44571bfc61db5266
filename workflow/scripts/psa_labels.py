"""Rule psa_labels: PSA's affinity labels, the CRF scores of a method's CAMs at a low and a
high background alpha, on maps calibrated from the preset threshold (never the oracle one)."""

from esol.refine import single_path
from esol.refiners.psa import make_affinity_scores
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    make_affinity_scores(snakemake.params.psa, snakemake.input.dataset,  # noqa: F821
                         snakemake.input.cams, snakemake.output.scores,  # noqa: F821
                         train_split=snakemake.params.train_split,  # noqa: F821
                         threshold_json=single_path(snakemake.input.threshold),  # noqa: F821
                         threads=snakemake.threads, **snakemake.params.preset)  # noqa: F821
