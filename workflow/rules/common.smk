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
    """What prepare_data reads from other rules: the generated dataset, or a conversion."""
    if DATASET["source"] == "synthetic":
        return [synthetic_root()]
    if DATASET["source"] == "coco":
        return [converted("coco.json")]
    if DATASET.get("sbd_root"):
        return [converted("sbd.json")]
    return []


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
    return [seed_outputs(m)["json"] for m in METHODS] + [f"{RESULTS}/seeds/table6.md"]


def converted(path=""):
    """Conversion outputs (SBD masks, COCO masks): dataset.converted_root or results/."""
    root = DATASET.get("converted_root") or f"{RESULTS}/converted"
    return os.path.join(os.path.expanduser(root), path)


def coco_annotations():
    """The COCO instances files: inputs of convert_coco, so a new file reruns it."""
    coco = DATASET.get("coco") or {"root": "", "splits": {}}
    root = os.path.expanduser(coco["root"])
    return [os.path.join(root, s["annotations"]) for s in coco["splits"].values()]
