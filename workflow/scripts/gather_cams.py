"""Rule gather_cams: the shard files of one method and split joined into one CAM file."""

from esol.cam import gather_cams
from esol.data.voc import DatasetInfo
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    ids = DatasetInfo.from_json(snakemake.input.dataset).ids(snakemake.wildcards.split)  # noqa: F821
    gather_cams(snakemake.input.shards, snakemake.output.cams, ids)  # noqa: F821
