# Path helpers and config lookups shared by the rules. No rule logic here.

import difflib
import hashlib
import os

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def validate_config(cfg, schema_path):
    """The schema check, in one line naming the key: an unknown top-level key gets the
    nearest valid one; any other failure, jsonschema's first line and the key's path
    (Snakemake's own message prints the whole schema and config, >1,000 lines)."""
    schema_path = os.path.join(workflow.basedir, schema_path)
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    known = list(schema["properties"])
    for key in cfg:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f" (valid keys: {', '.join(known)})"
            raise WorkflowError(f"config: unknown top-level key {key!r}{hint}")
    missing = [k for k in schema.get("required", []) if k not in cfg]
    if missing:
        raise WorkflowError(f"config: required key {missing[0]!r} is missing (a --configfile is "
                            "the whole config: start from a copy of config/config.yaml)")
    try:
        validate(cfg, schema=schema_path)
    except WorkflowError as err:
        raise WorkflowError(_short_validation_error(err, schema)) from None


def _short_validation_error(err, schema):
    """jsonschema's message and the path of the offending key, from Snakemake's error; an
    unknown nested key gets the nearest valid one."""
    # Snakemake raises its WorkflowError inside jsonschema's ValidationError handler.
    cause = next((e for e in (err.__cause__, err.__context__) if hasattr(e, "absolute_path")), None)
    if cause is None:
        return str(err).splitlines()[0]
    where = ".".join(str(p) for p in cause.absolute_path) or "(top level)"
    if cause.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(
        cause.instance, dict
    ):
        known = _schema_keys(cause.schema, schema)
        unknown = [k for k in cause.instance if k not in known]
        if known and unknown:
            near = difflib.get_close_matches(str(unknown[0]), known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f" (valid: {', '.join(known)})"
            return f"config: unknown key {where}.{unknown[0]}{hint}"
    return f"config key {where}: {cause.message}"


def _schema_keys(node, root):
    """Property names a schema node admits, through allOf and local $refs."""
    keys = list((node.get("properties") or {}) if isinstance(node, dict) else [])
    for sub in node.get("allOf", []) if isinstance(node, dict) else []:
        if "$ref" in sub and sub["$ref"].startswith("#/"):
            target = root
            for part in sub["$ref"][2:].split("/"):
                target = target[part]
            sub = target
        keys += [k for k in _schema_keys(sub, root) if k not in keys]
    return keys


validate_config(config, "schemas/config.schema.yaml")

# Entry scripts import the esol library from this checkout (the folder above
# workflow/), whatever environment runs them (the project's venv, a --sdm conda env, a
# cluster node): set, never required.
REPO_ROOT = os.path.dirname(os.path.abspath(workflow.basedir))
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p
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


# Params every training rule carries: a run's weights depend on them, so a change reruns
# the rule (Snakemake's params trigger) and everything downstream.
RUN_PARAMS = {"seed": config["seed"], "amp": config["amp"], "device": config["device"]}
# Inference: no random numbers, but precision and device shape the maps.
INFERENCE_PARAMS = {"amp": config["amp"], "device": config["device"]}


def user_root():
    """A dataset folder no rule writes (source voc), or None."""
    if DATASET["source"] != "voc" or not DATASET.get("root"):
        return None
    return os.path.expanduser(DATASET["root"])


def user_split_lists():
    """The split lists prepare_data reads from the user's folder (those that exist)."""
    root = user_root()
    if root is None:
        return []
    paths = [
        os.path.join(root, "ImageSets", "Segmentation", f"{s}.txt")
        for s in DATASET["splits"] + DATASET.get("test_splits", [])
    ]
    return [p for p in paths if os.path.isfile(p)]


def user_dataset_manifest():
    """SHA-1 of the names, sizes and mtimes of the user's images and masks.

    Cheap (one stat per file, no reads: about a second per 100k files on a local disk)
    and computed each time the DAG is built, so an edit to the dataset after
    prepare_data changes this param and reruns it. None for datasets the workflow
    writes itself (synthetic, converted), whose files are rule outputs.
    """
    root = user_root()
    if root is None:
        return None
    h = hashlib.sha1()
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassAug"):
        path = os.path.join(root, folder)
        if not os.path.isdir(path):
            continue
        with os.scandir(path) as entries:
            for e in sorted(entries, key=lambda e: e.name):
                st = e.stat()
                h.update(f"{folder}/{e.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


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
    return (
        [seed_outputs(m)["json"] for m in METHODS]
        + [f"{RESULTS}/seeds/table6.md"]
        + ([table1_outputs()["table_md"]] if REFINE_METHODS else [])
        + report_targets()
    )


def converted(path=""):
    """Conversion outputs (SBD masks, COCO masks): dataset.converted_root or results/."""
    root = DATASET.get("converted_root") or f"{RESULTS}/converted"
    return os.path.join(os.path.expanduser(root), path)


def coco_annotations():
    """The COCO instances files: inputs of convert_coco, so a new file reruns it."""
    coco = DATASET.get("coco") or {"root": "", "splits": {}}
    root = os.path.expanduser(coco["root"])
    return [os.path.join(root, s["annotations"]) for s in coco["splits"].values()]


# -- Refinement: seed CRF and IRN (workflow/rules/refine.smk) ---------------------------


def refine_methods():
    """Seed methods refined by CRF and IRN (config refine.methods), in that order."""
    unknown = [m for m in config["refine"]["methods"] if m not in config["methods"]]
    if unknown:
        raise ValueError(
            f"config key refine.methods names {unknown}, not among methods: {METHODS}"
        )
    return list(config["refine"]["methods"])


REFINE_METHODS = refine_methods()


def seed_cam_path(method, split):
    """The CAM file a method's seeds on a split are read from. Refined methods need CAMs
    of the whole training split for IRN; their seed split (a subset) is read from that
    file, so their CAMs are extracted once."""
    if method in REFINE_METHODS and split == DATASET["seed_split"]:
        return cam_path(method, DATASET["train_split"])
    return cam_path(method, split)


def seed_cams(wildcards):
    return seed_cam_path(wildcards.method, wildcards.split)


def seed_cam_list():
    """CAM files of every method's seed split, in the order of methods."""
    return [seed_cam_path(m, DATASET["seed_split"]) for m in METHODS]


def refine_path(method, *parts):
    return os.path.join(RESULTS, "refine", method, *parts)


def crf_dir(method, split):
    return refine_path(method, "crf", split)


def crf_json(method, split):
    return refine_path(method, "crf", f"{split}.json")


def ir_label_dir(method):
    return refine_path(method, "ir_labels", DATASET["train_split"])


def pseudo_mask_dir(method):
    """IRN pseudo masks of the training split (palette PNGs), what segmentation trains on."""
    return refine_path(method, "masks", DATASET["train_split"])


def mask_json(method, split):
    return refine_path(method, "masks", f"{split}.json")


def table1_inputs():
    split = DATASET["seed_split"]
    return {
        "seeds": [seed_outputs(m)["json"] for m in REFINE_METHODS],
        "crfs": [crf_json(m, split) for m in REFINE_METHODS],
        "masks": [mask_json(m, split) for m in REFINE_METHODS],
        "cams": [seed_cam_path(m, split) for m in REFINE_METHODS],
        "crf_dirs": [crf_dir(m, split) for m in REFINE_METHODS],
        "mask_dirs": [pseudo_mask_dir(m) for m in REFINE_METHODS],
    }


def table1_outputs():
    stem = f"{RESULTS}/refine/table1"
    return {
        "table_md": f"{stem}.md",
        "table_csv": f"{stem}.csv",
        "grid_png": f"{stem}_grid.png",
    }


# -- segmentation (DeepLab-v2 on a label source) and the report -----------------

SEGMENTATION = config["segmentation"]
# Label sources: "gt" (the dataset's own masks, the fully supervised row) and methods
# whose pseudo masks train a DeepLab.
SEG_SOURCES = (["gt"] if SEGMENTATION["supervised"] else []) + SEGMENTATION["methods"]
for _m in SEGMENTATION["methods"]:
    if _m not in REFINE_METHODS:
        raise ValueError(
            f"config key segmentation.methods names {_m!r}, which has no pseudo masks: "
            f"add it to refine.methods ({REFINE_METHODS})"
        )


wildcard_constraints:
    source="|".join(["gt", *METHODS]),


def report_table1_inputs(wildcards=None):
    """Table 1's files for the report: {table_md, table_csv, grid_png}; {} without refinement."""
    return table1_outputs() if REFINE_METHODS else {}


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
