"""Rule generate_synthetic: write the embedded synthetic dataset in the VOC layout."""

from esol.data import synthetic
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    synthetic.generate(snakemake.output[0], snakemake.params.synthetic,  # noqa: F821
                       seed=snakemake.config["seed"])  # noqa: F821
