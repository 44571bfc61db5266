"""Rule convert_sbd: train_aug from VOC 2012 + SBD (masks and list under converted/)."""

from esol.data.convert import write_manifest
from esol.data.prepare import converted_root
from esol.data.voc_aug import convert_sbd
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    d = snakemake.config["dataset"]  # noqa: F821
    summary = convert_sbd(d["root"], d["sbd_root"], converted_root(snakemake.config),  # noqa: F821
                          workers=snakemake.threads)  # noqa: F821
    write_manifest(snakemake.output.manifest, summary)  # noqa: F821
