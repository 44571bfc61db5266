"""Rule train_expansion: gradient ascent on the expansion sampler's offsets (Eq. 5)."""

from esol.distributed import launch
from esol.stages import train_expansion
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    launch(train_expansion, snakemake.params.processes,  # noqa: F821
           snakemake.config, snakemake.params.switches,  # noqa: F821
           snakemake.input.classifier, snakemake.input.dataset,  # noqa: F821
           snakemake.output.model, snakemake.output.history,  # noqa: F821
           expansion=snakemake.params.expansion,  # noqa: F821
           log_path=snakemake.log[0])  # noqa: F821
