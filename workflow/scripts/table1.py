"""Rule table1: Seed / CRF / one Mask per refiner, mIoU per refined method (the paper's
Table 1), at the oracle and the preset threshold, and a figure."""

from esol.refine import write_table1_from_inputs
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    write_table1_from_inputs(snakemake.params.methods, snakemake.params.refiners,  # noqa: F821
                             snakemake.input, snakemake.params.grid_images,  # noqa: F821
                             snakemake.output)  # noqa: F821
