"""Rule train_shrinkage: the shrinkage sampler's offsets under L_cls + L_area (Eq. 6)."""

from esol.distributed import launch
from esol.stages import train_shrinkage
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    launch(train_shrinkage, snakemake.params.processes,  # noqa: F821
           snakemake.config, snakemake.params.switches,  # noqa: F821
           snakemake.input.expansion, snakemake.input.dataset,  # noqa: F821
           snakemake.output.model, snakemake.output.history,  # noqa: F821
           shrinkage=snakemake.params.shrinkage,  # noqa: F821
           clip_beta=snakemake.params.clip_beta,  # noqa: F821
           log_path=snakemake.log[0])  # noqa: F821
