"""Rule make_advcam: AdvCAM's anti-adversarial maps of one split, to the CAM store."""

from esol.advcam import extract_advcams
from esol.utils import rule_logging

with rule_logging(snakemake.log[0], snakemake.threads):  # noqa: F821
    extract_advcams(snakemake.input.checkpoint, snakemake.input.dataset,  # noqa: F821
                    snakemake.wildcards.split, snakemake.output.cams,  # noqa: F821
                    snakemake.params.cam["scales"], snakemake.params.cam["flip"],  # noqa: F821
                    snakemake.params.advcam, snakemake.config["device"])  # noqa: F821
