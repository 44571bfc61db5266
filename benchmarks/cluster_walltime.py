"""Wall time of the tiny cluster config run locally and through the SLURM profiles.

Not a test: it measures and writes figures to a JSON file (README, "Running on a SLURM
cluster"). As root on Debian:

    python benchmarks/cluster_walltime.py --out benchmarks/out/cluster_walltime.json

Installs SLURM with apt-get if needed and starts the one-node cluster of the tests
(tests/cluster/one_node_slurm.py), timing both; then runs the tests' tiny config
(tests/cluster/workflow_runs.py: 2 methods, 1 epoch, one thread per job) locally with
profiles/local, and from scratch through profiles/slurm and profiles/slurm-generic,
recording each run's wall time and SLURM job count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from esol.evaluate import write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cluster import one_node_slurm  # noqa: E402
from cluster.workflow_runs import (cluster_config, differences, generic_args,  # noqa: E402
                                   generic_submissions, local_args, slurm_args,
                                   slurm_submissions, snakemake)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/out/cluster_walltime.json")
    args = ap.parse_args()
    reason = one_node_slurm.unavailable_reason()
    if reason:
        raise SystemExit(f"cluster_walltime: {reason}")
    result: dict = {"cpus": os.cpu_count(), "load_average_before": os.getloadavg()}
    t0 = time.monotonic()
    result["install_seconds"] = one_node_slurm.ensure_installed()
    with tempfile.TemporaryDirectory() as tmp, one_node_slurm.OneNodeSlurm() as cluster:
        result["cluster_start_seconds"] = cluster.start_seconds
        result["setup_seconds"] = time.monotonic() - t0
        work = Path(tmp)
        runs = {"local": snakemake(work / "local", cluster_config(), *local_args()),
                "slurm": snakemake(work / "slurm", cluster_config(), *slurm_args(),
                                   env=cluster.env()),
                "slurm-generic": snakemake(work / "generic", cluster_config(), *generic_args(),
                                           env=cluster.env())}
        jobs = {"slurm": len(slurm_submissions(runs["slurm"].output)),
                "slurm-generic": len(generic_submissions(runs["slurm-generic"].output))}
        for name, run in runs.items():
            if run.returncode != 0:
                raise SystemExit(f"{name} run failed:\n{run.output[-3000:]}")
            result[name] = {"wall_seconds": round(run.seconds, 1), "slurm_jobs": jobs.get(name),
                            "differences_from_local": differences(runs["local"], run)}
    result["load_average_after"] = os.getloadavg()
    write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
