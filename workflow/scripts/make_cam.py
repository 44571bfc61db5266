"""Rule make_cam: multi-scale + flip CAMs of one method on one split, to HDF5."""

from esol.stages import extract_cams
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    extract_cams(snakemake.config, snakemake.params.method,  # noqa: F821
                 snakemake.input.checkpoint, snakemake.input.dataset,  # noqa: F821
                 snakemake.wildcards.split, snakemake.output.cams,  # noqa: F821
                 shard=snakemake.params.shard,  # noqa: F821
                 clip_beta=snakemake.params.clip_beta)  # noqa: F821
