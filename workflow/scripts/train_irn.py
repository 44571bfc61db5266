"""Rule train_irn: the inter-pixel relation network of one method, from its IR labels."""

from esol.distributed import launch
from esol.irn.stage import train_irn
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    launch(train_irn, snakemake.params.processes,  # noqa: F821
           snakemake.config, snakemake.input.dataset, snakemake.input.labels,  # noqa: F821
           snakemake.input.classifier, snakemake.output.model,  # noqa: F821
           snakemake.output.history,  # noqa: F821
           log_path=snakemake.log[0])  # noqa: F821
