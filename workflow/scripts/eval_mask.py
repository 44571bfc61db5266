"""Rule eval_mask: mIoU, precision and recall of a method's pseudo masks by one refiner."""

from esol.refine import evaluate_mask_dir
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    evaluate_mask_dir(snakemake.input.masks, snakemake.input.dataset,  # noqa: F821
                      snakemake.wildcards.split, snakemake.wildcards.method,  # noqa: F821
                      snakemake.output.json, **snakemake.params.refiner)  # noqa: F821
