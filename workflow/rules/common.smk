# Path helpers and config lookups shared by the rules. No rule logic here.

import os

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

# Entry scripts import the esol library from this checkout, whatever environment runs
# them (the project's venv, a --sdm conda env, a cluster node): set, never required.
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p
    )
)

DATASET = config["dataset"]
RESULTS = f"results/{DATASET['name']}"
METHODS = list(config["methods"])
SPLITS = DATASET["splits"] + DATASET.get("test_splits", [])


wildcard_constraints:
    method="|".join(METHODS),
    split="|".join(SPLITS),
    clip="clip|noclip",


def synthetic_root():
    return f"{RESULTS}/synthetic"


def dataset_inputs(wildcards):
    """The generated dataset folder, when the dataset is the embedded synthetic one."""
    return [synthetic_root()] if DATASET["source"] == "synthetic" else []


def prepared(path=""):
    return f"{RESULTS}/data/{path}"


def model_path(name):
    return f"{RESULTS}/models/{name}.pt"


def log_path(rule, *parts):
    return os.path.join(RESULTS, "logs", rule, *parts) + ".log"


def benchmark_path(rule, *parts):
    return os.path.join(RESULTS, "benchmarks", rule, *parts) + ".tsv"


def method_spec(wildcards):
    """The Table 6 switches of a method."""
    return config["methods"][wildcards.method]


def clip_tag(spec):
    """Methods whose Expansion stages agree share one checkpoint, keyed by clipping."""
    return "clip" if spec["clipping"] else "noclip"


def expansion_switches(wildcards):
    return {"expansion_offsets": True, "clipping": wildcards.clip == "clip"}


def shrinkage_input(wildcards):
    """Shrinkage starts from the method's Expansion, or the classifier if it has none."""
    spec = config["methods"][wildcards.method]
    if spec["expansion_offsets"]:
        return model_path(f"expansion_{clip_tag(spec)}")
    return model_path("classifier")


def method_checkpoint(wildcards):
    """The checkpoint a method's CAMs come from: the last stage it trains."""
    spec = config["methods"][wildcards.method]
    if spec["shrinkage"]:
        return model_path(f"shrinkage_{wildcards.method}")
    if spec["expansion_offsets"]:
        return model_path(f"expansion_{clip_tag(spec)}")
    return model_path("classifier")


def cam_path(method, split):
    return f"{RESULTS}/cams/{method}/{split}.h5"


def seed_outputs(method, split=DATASET["seed_split"]):
    stem = f"{RESULTS}/seeds/{method}/{split}"
    return {"json": f"{stem}.json", "csv": f"{stem}.csv", "png": f"{stem}.png"}


def all_outputs():
    return [seed_outputs(m)["json"] for m in METHODS] + [f"{RESULTS}/seeds/table6.md"] + report_targets()


# -- segmentation (DeepLab-v2 on a label source) and the report -----------------

SEGMENTATION = config["segmentation"]
# Label sources: "gt" (the dataset's own masks, the fully supervised row) and methods
# whose pseudo masks train a DeepLab.
SEG_SOURCES = (["gt"] if SEGMENTATION["supervised"] else []) + SEGMENTATION["methods"]
for _m in SEGMENTATION["methods"]:
    if _m not in METHODS:
        raise ValueError(
            f"segmentation.methods names {_m!r}, which is not a key of methods: {METHODS}"
        )


wildcard_constraints:
    source="|".join(["gt", *METHODS]),


# -- provided by the refine branch at merge --
# The refinement branch defines pseudo_mask_dir(method) (rule pseudo_masks' directory
# output: palette PNGs <id>.png of the training split) and table1_outputs() (Table 1 as
# markdown, CSV and a grid picture). Until then segmentation can only train on "gt" and
# the report says refinement is not configured.


def pseudo_mask_dir(method):
    """A method's pseudo masks for the training split: a folder of palette PNGs <id>.png."""
    return f"{RESULTS}/pseudo_masks/{method}"


def report_table1_inputs(wildcards=None):
    """Table 1's files for the report: {table_md, table_csv, grid_png}, or {} without refinement."""
    return {}


# -- end of the block provided by the refine branch --


def segmentation_label_dir(wildcards):
    """Where a label source's training masks are read: None = the dataset's own masks."""
    return None if wildcards.source == "gt" else pseudo_mask_dir(wildcards.source)


def segmentation_labels(wildcards):
    """The files a label source's masks come from (the generated dataset for gt)."""
    if wildcards.source == "gt":
        return dataset_inputs(wildcards)
    return [pseudo_mask_dir(wildcards.source)]


def segmentation_init(wildcards):
    """The classifier checkpoint, when DeepLab's backbone starts from it."""
    return [model_path("classifier")] if SEGMENTATION["model"]["pretrained"] == "classifier" else []


def deeplab_path(source):
    return model_path(f"deeplab_{source}")


def prediction_dir(source, split, kind):
    """Predicted label maps of a split: kind raw (no CRF) or crf."""
    return f"{RESULTS}/segmentation/{source}/{split}/{kind}"


def segmentation_json(source, split=SEGMENTATION["eval_split"]):
    return f"{RESULTS}/segmentation/{source}/{split}.json"


def submission_dir(source, split):
    return f"{RESULTS}/segmentation/{source}/{split}/submission"


def report_path(name):
    return f"{RESULTS}/report/{name}"


def report_targets():
    """The report, and a submission folder per test split and label source."""
    return [report_path("report.md")] + [
        submission_dir(s, t) for s in SEG_SOURCES for t in DATASET.get("test_splits", [])
    ]
