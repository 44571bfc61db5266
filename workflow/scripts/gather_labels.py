"""Gather rules of label folders (gather_crf_seed): the shard folders of one split joined
into the folder an unsharded rule writes."""

from esol.labeldir import gather_split
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    gather_split(snakemake.input.dataset, snakemake.params.split,  # noqa: F821
                 snakemake.input.shards, snakemake.output.labels)  # noqa: F821
