"""Rule eval_seed: background-threshold sweep of a method's CAM seeds."""

from esol.evaluate import evaluate_seeds_to_files
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    evaluate_seeds_to_files(snakemake.input.cams, snakemake.input.dataset,  # noqa: F821
                            snakemake.wildcards.split, snakemake.params.thresholds,  # noqa: F821
                            title=snakemake.wildcards.method, **snakemake.output)  # noqa: F821
