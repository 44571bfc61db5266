"""Rule eval_seed: background-threshold sweep of a method's CAM seeds (oracle threshold),
and the figures at the preset threshold."""

from esol.evaluate import evaluate_seeds_to_files
from esol.refine import preset_threshold, single_path
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    preset = preset_threshold(snakemake.config["refine"],  # noqa: F821
                              single_path(snakemake.input.threshold))  # noqa: F821
    evaluate_seeds_to_files(snakemake.input.cams, snakemake.input.dataset,  # noqa: F821
                            snakemake.wildcards.split, snakemake.params.thresholds,  # noqa: F821
                            title=snakemake.wildcards.method, preset=preset,  # noqa: F821
                            **snakemake.output)  # noqa: F821
