"""Rule train_classifier: the classifier stage of ESOLNet (IRN's train_cam recipe)."""

from esol.distributed import launch
from esol.stages import train_classifier
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    launch(train_classifier, snakemake.params.processes,  # noqa: F821
           snakemake.config, snakemake.input.dataset,  # noqa: F821
           snakemake.output.model, snakemake.output.history,  # noqa: F821
           log_path=snakemake.log[0])  # noqa: F821
