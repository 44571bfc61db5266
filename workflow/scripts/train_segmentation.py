"""Rule train_segmentation: DeepLab-v2 on one label source's masks of the training split."""

from esol.distributed import launch
from esol.segmentation.train import train_segmentation
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    launch(train_segmentation, snakemake.params.processes,  # noqa: F821
           snakemake.config, snakemake.input.dataset,  # noqa: F821
           snakemake.params.label_dir, snakemake.output.model,  # noqa: F821
           snakemake.output.history,  # noqa: F821
           classifier_ckpt=next(iter(snakemake.input.init), None),  # noqa: F821
           source=snakemake.wildcards.source,  # noqa: F821
           log_path=snakemake.log[0])  # noqa: F821
