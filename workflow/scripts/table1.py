"""Rule table1: Seed / CRF / Mask mIoU per refined method (the paper's Table 1), at the
oracle and the preset threshold, and a figure."""

from esol.refine import write_table1
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    write_table1(snakemake.params.methods, snakemake.input.dataset,  # noqa: F821
                 snakemake.input.seeds, snakemake.input.crfs,  # noqa: F821
                 snakemake.input.crfs_preset, snakemake.input.masks,  # noqa: F821
                 snakemake.input.cams, snakemake.input.crf_dirs,  # noqa: F821
                 snakemake.input.mask_dirs, snakemake.params.grid_images,  # noqa: F821
                 **snakemake.output)  # noqa: F821
