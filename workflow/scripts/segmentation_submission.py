"""Rule segmentation_submission: CRF predictions of a split in the VOC server's layout."""

from esol.segmentation.predict import write_submission_from_dataset
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    write_submission_from_dataset(snakemake.input.dataset, snakemake.input.crf,  # noqa: F821
                                  snakemake.wildcards.split, snakemake.output[0])  # noqa: F821
