"""Wall time of one CAM extraction unsharded vs in shard jobs, through Snakemake, locally.

Not a test: it measures and writes figures to a JSON file (docs/cluster.md, "Measured
here"). It needs a scratch working directory holding what make_cam reads, e.g. from a
finished demo run (nothing is written there but under the scratch folder):

    mkdir -p /tmp/s/results/synthetic/{data,models}
    cp results/synthetic/data/dataset.json /tmp/s/results/synthetic/data/
    cp results/synthetic/models/classifier.pt /tmp/s/results/synthetic/models/
    python benchmarks/shard_walltime.py --work /tmp/s --out benchmarks/out/shard_walltime.json

Snakemake runs only ``make_cam`` and ``gather_cams`` (``--allowed-rules``; the copied
files count as sources) on ``--cores`` cores: unsharded, one job with all cores as
threads; sharded, ``--shards`` jobs of ``cores / shards`` threads each, at once, then
the gather. Runs alternate (unsharded, sharded, ...) ``--repeats`` times; the CAM file
of each sharded run is compared dataset by dataset with the unsharded one (equal up to
the rounding of float sums over a different number of threads).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def _datasets(path: Path) -> dict:
    out: dict = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def run(work: Path, config: Path, target: str, shards: int, cores: int) -> float:
    """Seconds of one Snakemake call making ``target`` from scratch."""
    cams = work / Path(target).parent
    shutil.rmtree(cams, ignore_errors=True)
    for sub in ("logs", "benchmarks"):
        shutil.rmtree(work / Path(target).parts[0] / Path(target).parts[1] / sub, ignore_errors=True)
    threads = max(1, cores // shards)
    cmd = [SNAKEMAKE, target, "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(work),
           "--configfile", str(config), "--config", f"shards={shards}",
           "--allowed-rules", "make_cam", "gather_cams", "--cores", str(cores),
           "--set-threads", f"make_cam={threads}", "--quiet", "all"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{out.stderr[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    ap.add_argument("--target", default="results/synthetic/cams/cam/train_aug.h5")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/out/shard_walltime.json")
    args = ap.parse_args()
    work = args.work.resolve()
    result: dict = {"cpus": os.cpu_count(), "cores": args.cores, "shards": args.shards,
                    "threads": {"unsharded": args.cores,
                                "per_shard": max(1, args.cores // args.shards)},
                    "target": args.target, "load_average_before": os.getloadavg(),
                    "unsharded_seconds": [], "sharded_seconds": []}
    reference = None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(args.repeats):
        result["unsharded_seconds"].append(round(run(work, args.config, args.target, 1, args.cores), 1))
        if reference is None:
            reference = _datasets(work / args.target)
        result["sharded_seconds"].append(round(run(work, args.config, args.target, args.shards,
                                                   args.cores), 1))
        gathered = _datasets(work / args.target)
        # The jobs run with different torch thread counts (cores vs cores / shards), which
        # changes the order of float sums: equal up to rounding, not bit for bit (with equal
        # thread counts they are: tests/test_shards.py, tests/test_cluster.py).
        result["same_images"] = gathered.keys() == reference.keys()
        result["datasets_bit_identical"] = sum(
            bool(np.array_equal(gathered[k], reference[k])) for k in reference)
        result["datasets"] = len(reference)
        result["max_abs_difference"] = max(
            float(np.abs(gathered[k].astype(np.float64) - reference[k]).max())
            for k in reference if reference[k].dtype.kind == "f")
        with h5py.File(work / args.target, "r") as f:
            result["images"] = len(f)
        result["load_average_after"] = os.getloadavg()
        out.write_text(json.dumps(result, indent=1))  # after each pair: a long run keeps its figures
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
