"""Rule convert_coco: COCO instance annotations to VOC-layout semantic masks."""

from esol.data.coco import coco_splits_from_config, convert_coco
from esol.data.convert import write_manifest
from esol.data.prepare import converted_root
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    cfg = snakemake.config  # noqa: F821
    manifest = convert_coco(coco_splits_from_config(cfg["dataset"]), converted_root(cfg),
                            workers=snakemake.threads)  # noqa: F821
    write_manifest(snakemake.output.manifest, manifest)  # noqa: F821
