"""Rule tune_threshold: a method's preset threshold, its best seed mIoU on the labelled
tuning split (disjoint from every pseudo-labelled or evaluated split: checked first)."""

from esol.refine import guarded_splits, tune_threshold
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    tune_threshold(snakemake.input.cams, snakemake.input.dataset,  # noqa: F821
                   snakemake.params.tuning_split, guarded_splits(snakemake.config),  # noqa: F821
                   snakemake.params.thresholds, snakemake.wildcards.method,  # noqa: F821
                   snakemake.output.json, snakemake.output.csv)  # noqa: F821
