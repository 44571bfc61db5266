"""Rule eval_segmentation: mIoU and per-class IoU of the predictions, without and with CRF."""

from esol.segmentation.evaluate import evaluate_segmentation
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    evaluate_segmentation(snakemake.input.dataset, snakemake.wildcards.split,  # noqa: F821
                          snakemake.input.raw, snakemake.input.crf,  # noqa: F821
                          snakemake.output.json, source=snakemake.wildcards.source)  # noqa: F821
