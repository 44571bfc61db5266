# esol-wsss: ESOL (NeurIPS 2022) from images with class labels to evaluated seeds.
# The DAG, stage by stage; every rule's logic lives in esol/ behind workflow/scripts/.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/esol.smk"
include: "workflow/rules/cam.smk"
include: "workflow/rules/refine.smk"
include: "workflow/rules/segment.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
