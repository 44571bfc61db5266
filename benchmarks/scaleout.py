"""Projected wall time of the full-scale pipeline on 1, 4 and 16 GPUs.

Not a test: it computes figures from measured per-stage rates and writes them to
``benchmarks/out/scaleout.json`` and ``benchmarks/out/scaleout.md`` (docs/cluster.md,
"Projected wall time"). No GPU needed:

    python benchmarks/scaleout.py [--measured voc12=benchmarks/out/gpu_measure_voc12.json ...]

Rates (images per second per stage) come from ``benchmarks/gpu_measure.py``'s JSON when
given, else from the H100 measurement recorded in docs/full-scale.md ("How long each
stage takes", 2026-11-24: images and hours per stage, so rates rounded to the table's
two digits). Each stage's jobs and images per job come from the config
(config/voc12.yaml, config/coco14.yaml), as gpu_measure.py counts them.

The model, per GPU count G:

* **Per-image stages** (``make_cam``, the IRN CAMs of the training split, the random
  walk of ``pseudo_masks``, ``predict_segmentation``) run as ``shards`` jobs of one GPU
  each (config ``shards``); G GPUs run them in ``ceil(shards / G)`` waves, so one job of
  such a stage takes ``t * ceil(shards / G) / shards`` (t: its time unsharded). The
  gather steps (links and copies, seconds) are left out.
* **Training stages** (classifier, Expansion, Shrinkage, IRN, DeepLab) run under DDP on
  ``g = min(G, gpus_per_node)`` GPUs of one node (config ``gpus_per_job``): ``t / (g *
  efficiency)`` with ``efficiency`` 1 for g = 1, else the stated ``--ddp-efficiency``
  (an assumption: all-reduce of ResNet gradients at small per-GPU batches; not
  measured here).
* **Serial stages**: none among the measured ones; the CPU stages (CRF of ``ir_labels``,
  evaluation, conversion) and data loading are not included, as in gpu_measure.py.
* The DAG's **critical path** CP is the longest chain of jobs (classifier -> Expansion
  -> Shrinkage -> IRN CAMs -> IRN -> random walk -> DeepLab -> prediction, for the
  method DeepLab trains on), each job with the GPUs above. The **work** W is the GPU
  hours of all jobs (training: ``t / efficiency`` over its GPUs). The wall time lies
  between ``max(CP, W / G)`` (no schedule beats either) and ``W / G + (1 - 1/G) CP``
  (Graham's bound for a greedy list scheduler, which Snakemake's is); ``projected``
  is the lower bound. With G = 1 both are W.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

PER_IMAGE = ("make_cam_cam", "make_cam_esol", "irn_cam_train_split", "irn_random_walk",
             "deeplab_predict")
TRAINING = ("classifier", "expansion", "shrinkage", "irn_train", "deeplab_train")
STAGES = TRAINING + PER_IMAGE
# Which job a stage's jobs wait for (the pipeline's DAG, workflow/rules/*.smk), along
# the chain of an ESOL method whose pseudo masks train DeepLab.
AFTER = {"classifier": None, "expansion": "classifier", "shrinkage": "expansion",
         "make_cam_cam": "classifier", "make_cam_esol": "shrinkage",
         "irn_cam_train_split": "shrinkage", "irn_train": "irn_cam_train_split",
         "irn_random_walk": "irn_train", "deeplab_train": "irn_random_walk",
         "deeplab_predict": "deeplab_train"}

# docs/full-scale.md, "How long each stage takes": one NVIDIA H100 80GB, 2026-11-24,
# benchmarks/gpu_measure.py; stage -> (images, fp32 hours, bf16 hours) per dataset.
RECORDED = {
    "voc12": {"classifier": (52_880, 0.06, 0.04), "expansion": (211_520, 0.41, 0.39),
              "shrinkage": (105_760, 0.24, 0.23), "make_cam_cam": (1_464, 0.03, 0.03),
              "make_cam_esol": (4_392, 0.10, 0.12), "irn_cam_train_split": (21_164, 0.50, 0.59),
              "irn_train": (63_360, 0.08, 0.08), "irn_random_walk": (21_164, 0.15, 0.16),
              "deeplab_train": (201_020, 0.77, 0.88), "deeplab_predict": (1_449, 0.16, 0.18)},
    "coco14": {"classifier": (413_840, 0.46, 0.27), "expansion": (827_680, 1.6, 1.5),
               "shrinkage": (827_680, 1.9, 1.9), "make_cam_cam": (82_783, 2.6, 2.9),
               "make_cam_esol": (82_783, 3.5, 4.1), "irn_cam_train_split": (165_566, 7.0, 8.2),
               "irn_train": (496_512, 0.62, 0.64), "irn_random_walk": (165_566, 1.5, 1.9),
               "deeplab_train": (993_360, 4.6, 4.7), "deeplab_predict": (40_504, 4.4, 5.2)},
}
RECORDED_DEVICE = "NVIDIA H100 80GB HBM3 (docs/full-scale.md, measured 2026-11-24)"
MODES = ("fp32", "bf16")


def recorded_rates(dataset: str, mode: str) -> dict[str, float]:
    """Images per second per stage from the recorded measurement."""
    col = MODES.index(mode) + 1
    return {s: row[0] / (row[col] * 3600) for s, row in RECORDED[dataset].items()}


def stage_jobs(cfg: Mapping) -> dict[str, tuple[int, int]]:
    """stage -> (jobs, images per job) under ``cfg``, as benchmarks/gpu_measure.py counts
    the images (training: epochs x full batches of the training split)."""
    d = cfg["dataset"]
    counts = d["expected_counts"]
    n_train, n_seed = counts[d["train_split"]], counts[d["seed_split"]]
    methods = cfg["methods"].values()
    seg = cfg["segmentation"]

    def steps(section: Mapping) -> int:
        return section["epochs"] * (n_train // section["batch_size"]) * section["batch_size"]

    cls_section = cfg["classifier"]
    expansions = len({m["clipping"] for m in methods if m["expansion_offsets"]})
    shrinkages = sum(1 for m in methods if m["shrinkage"])
    refined = len(cfg["refine"]["methods"])
    deeplabs = len(seg["methods"]) + int(seg["supervised"])
    return {"classifier": (1, steps(cls_section)),
            "expansion": (expansions, steps(cfg["expansion"])),
            "shrinkage": (shrinkages, steps(cfg["shrinkage"])),
            "make_cam_cam": (1, n_seed),
            "make_cam_esol": (len(cfg["methods"]) - 1, n_seed),
            "irn_cam_train_split": (refined, n_train),
            "irn_train": (refined, steps(cfg["irn"]["train"])),
            "irn_random_walk": (refined, n_train),
            "deeplab_train": (deeplabs, steps(seg["train"])),
            "deeplab_predict": (deeplabs, counts[seg["eval_split"]])}


def job_hours(stage: str, unsharded: float, gpus: int, shards: int, gpus_per_node: int,
              efficiency: float) -> tuple[float, int]:
    """(wall hours of one job of ``stage`` when G = ``gpus`` are free, GPUs it holds).

    Per-image stages: ``shards`` one-GPU jobs in ``ceil(shards / gpus)`` waves, so the
    stage's wall time (reported for its one job) is ``unsharded * waves / shards``;
    training: DDP on ``min(gpus, gpus_per_node)`` GPUs at ``efficiency``."""
    if stage in PER_IMAGE:
        return unsharded * math.ceil(shards / gpus) / shards, min(gpus, shards)
    g = min(gpus, gpus_per_node)
    return unsharded / (g * (efficiency if g > 1 else 1.0)), g


def project(rates: Mapping[str, float], jobs: Mapping[str, tuple[int, int]], gpus: int,
            shards: int, gpus_per_node: int, efficiency: float) -> dict:
    """Critical path, work and wall-time bounds (hours) on ``gpus`` GPUs (module docstring)."""
    stages = {}
    for s in STAGES:
        n, images = jobs[s]
        unsharded = images / rates[s] / 3600  # one job on one GPU
        wall, held = job_hours(s, unsharded, gpus, shards, gpus_per_node, efficiency)
        # GPU hours: a sharded stage's work is unchanged; DDP adds (1/efficiency - 1).
        work = unsharded if s in PER_IMAGE else wall * held
        stages[s] = {"jobs": n, "images_per_job": images, "one_gpu_hours": unsharded,
                     "job_hours": wall, "gpus_per_job": held, "gpu_hours": n * work}

    def finish(s: str) -> float:
        return (finish(AFTER[s]) if AFTER[s] else 0.0) + stages[s]["job_hours"]

    cp_end = max(STAGES, key=lambda s: finish(s) if jobs[s][0] else -1)
    path, s = [], cp_end
    while s:
        path.append(s)
        s = AFTER[s]
    cp = finish(cp_end)
    work = sum(v["gpu_hours"] for v in stages.values())
    lower = max(cp, work / gpus)
    upper = work / gpus + (1 - 1 / gpus) * cp
    return {"gpus": gpus, "stages": stages, "critical_path": path[::-1],
            "critical_path_hours": cp, "work_gpu_hours": work, "projected_hours": lower,
            "greedy_bound_hours": upper}


def markdown(result: Mapping) -> str:
    a = result["assumptions"]
    lines = [f"Projected wall time, hours (rates: {result['rates_from']}; shards "
             f"{a['shards']}, DDP on up to {a['gpus_per_node']} GPUs of a node at "
             f"{a['ddp_efficiency']:.0%} efficiency; GPU stages only, CPU stages, data "
             "loading and gathers left out). Cells: projected (lower bound) - greedy bound.",
             "", "| dataset | precision | " + " | ".join(f"{g} GPU{'s' if g > 1 else ''}"
                                                        for g in a["gpus"]) + " |",
             "|---|---|" + "---|" * len(a["gpus"])]
    for ds, modes in result["datasets"].items():
        for mode, runs in modes.items():
            cells = []
            for r in runs:
                lo, hi = r["projected_hours"], r["greedy_bound_hours"]
                cells.append(f"{lo:.2f}" if math.isclose(lo, hi) else f"{lo:.2f} - {hi:.2f}")
            lines.append(f"| {ds} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Critical path (hours) and GPU work (GPU-hours), fp32:", "",
              "| dataset | GPUs | critical path | work |", "|---|---|---|---|"]
    for ds, modes in result["datasets"].items():
        for r in modes.get("fp32", []):
            lines.append(f"| {ds} | {r['gpus']} | {r['critical_path_hours']:.2f} | "
                         f"{r['work_gpu_hours']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measured", nargs="*", default=[],
                    help="DATASET=gpu_measure.json (voc12, coco14): rates from that run")
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--gpus-per-node", type=int, default=4,
                    help="DDP runs on one node: the most GPUs one training job gets")
    ap.add_argument("--ddp-efficiency", type=float, default=0.8,
                    help="speed-up per GPU of a DDP job over one GPU (an assumption)")
    ap.add_argument("--shards", type=int, default=None,
                    help="per-image jobs per stage (default: the configs' shards)")
    ap.add_argument("--out", default="benchmarks/out/scaleout.json")
    args = ap.parse_args()
    measured = dict(m.split("=", 1) for m in args.measured)
    result: dict = {"assumptions": {"gpus": args.gpus, "gpus_per_node": args.gpus_per_node,
                                    "ddp_efficiency": args.ddp_efficiency},
                    "rates_from": ", ".join(f"{k}: {v}" for k, v in measured.items())
                    or RECORDED_DEVICE, "datasets": {}}
    for ds in ("voc12", "coco14"):
        cfg = yaml.safe_load((REPO / "config" / f"{ds}.yaml").read_text())
        shards = args.shards or cfg["shards"]
        result["assumptions"]["shards"] = shards
        jobs = stage_jobs(cfg)
        result["datasets"][ds] = {}
        run = json.loads(Path(measured[ds]).read_text())["modes"] if ds in measured else None
        for mode in MODES:
            if run is not None and mode not in run:
                continue  # gpu_measure.py --amp without this mode
            rates = run[mode]["images_per_s"] if run is not None else recorded_rates(ds, mode)
            result["datasets"][ds][mode] = [
                project(rates, jobs, g, shards, args.gpus_per_node, args.ddp_efficiency)
                for g in args.gpus]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
