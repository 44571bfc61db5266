"""Rule eval_crf: mIoU, precision and recall of a method's seed CRF label maps."""

from esol.refine import evaluate_label_dir_to_json, seed_threshold
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    threshold = seed_threshold(snakemake.config["refine"], snakemake.input.seed)  # noqa: F821
    evaluate_label_dir_to_json(snakemake.input.labels, snakemake.input.dataset,  # noqa: F821
                               snakemake.wildcards.split, snakemake.wildcards.method,  # noqa: F821
                               "crf", snakemake.output.json,  # noqa: F821
                               extra={"threshold": threshold})
