"""Rule import_cams: an external method's CAMs of a split (a folder of IRN .npy files or
an HDF5 CAM file, config methods.<m>.external) into the pipeline's CAM store."""

from esol.cam_io import import_external
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    import_external(snakemake.params.source, snakemake.output.cams,  # noqa: F821
                    snakemake.input.dataset, snakemake.wildcards.split,  # noqa: F821
                    manifest=snakemake.params.manifest)  # noqa: F821
