"""Rule eval_crf: mIoU, precision and recall of a method's seed CRF label maps, with the
threshold they used and how it was chosen (oracle or preset)."""

from esol.refine import crf_threshold, evaluate_label_dir_to_json, single_path
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    threshold, how = crf_threshold(snakemake.config, snakemake.wildcards.choice,  # noqa: F821
                                   single_path(snakemake.input.threshold))  # noqa: F821
    evaluate_label_dir_to_json(snakemake.input.labels, snakemake.input.dataset,  # noqa: F821
                               snakemake.wildcards.split, snakemake.wildcards.method,  # noqa: F821
                               "crf", snakemake.output.json,  # noqa: F821
                               extra={"threshold": threshold, "threshold_choice": how})
