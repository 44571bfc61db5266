"""Rule prepare_data: validate the dataset and derive image-level labels, once."""

from esol.data.prepare import prepare_from_config
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    info = prepare_from_config(snakemake.config, workers=snakemake.threads)  # noqa: F821
    info.manifest = snakemake.params.manifest  # noqa: F821
    info.to_json(snakemake.output.dataset)  # noqa: F821
