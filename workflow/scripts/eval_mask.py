"""Rule eval_mask: mIoU, precision and recall of a method's IRN pseudo masks."""

from esol.refine import evaluate_label_dir_to_json, mask_threshold_choice
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    evaluate_label_dir_to_json(snakemake.input.masks, snakemake.input.dataset,  # noqa: F821
                               snakemake.wildcards.split, snakemake.wildcards.method,  # noqa: F821
                               "mask", snakemake.output.json,  # noqa: F821
                               extra={"threshold": snakemake.params.bg_threshold,  # noqa: F821
                                      "threshold_choice": mask_threshold_choice(
                                          snakemake.config)})  # noqa: F821
