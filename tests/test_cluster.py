"""Cluster submission through profiles/slurm and profiles/slurm-generic, on a real SLURM.

A one-node SLURM (munged, slurmctld, slurmd; tests/cluster/one_node_slurm.py) is started
for this module and stopped after it. Five Snakemake runs start at once (the SLURM runs
mostly wait, so this keeps the module's time near its longest run): the tiny config
locally, through profiles/slurm (with ``shards: 2``: CAM extraction as two shard jobs
per method and split, and gather_cams) and through profiles/slurm-generic, and a config
whose first rule fails through each profile. Every job must have gone through SLURM (the
job ids Snakemake logged are in SLURM's own records, COMPLETED, naming the rule; each
CAM shard a job of its own) and the result files must equal the local, unsharded run's. A rule that fails on the cluster must make
Snakemake exit non-zero within FAIL_TIMEOUT seconds. The node declares one GPU backed
by /dev/null, so a GPU request (--set-resources train_classifier:gpu=1) is really
scheduled by SLURM; the job still computes on the CPU (device: cpu), so its results
stay comparable.

Skipped, with the reason, only where there is no root or no apt-get to install SLURM.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cluster import one_node_slurm
from conftest import module_scratch
from cluster.one_node_slurm import OneNodeSlurm
from cluster.workflow_runs import (FAIL_TIMEOUT, PROFILES, Run, cluster_config, differences,
                                   failing_config, generic_args, generic_submissions,
                                   local_args, planned_jobs, result_files, slurm_args,
                                   slurm_job_wildcards, slurm_submissions, squeue_records,
                                   start, wait_all)

REASON = one_node_slurm.unavailable_reason()
pytestmark = [pytest.mark.cluster, pytest.mark.slow,
              pytest.mark.skipif(REASON is not None, reason=f"no one-node SLURM: {REASON}")]

GPU_RULE = "train_classifier"
GPU_OVERRIDE = ["--set-resources", f"{GPU_RULE}:gpu=1"]
CAM_TARGET = "results/cluster/seeds/cam/train.json"
SEED_TARGET = "results/cluster/seeds/table6.md"
SHARDS = 2  # the profiles/slurm run extracts CAMs in 2 shard jobs per method and split


@pytest.fixture(scope="module")
def cluster():
    with OneNodeSlurm(fake_gpu=True, oversubscribe=4) as c:
        yield c


@pytest.fixture(scope="module")
def runs(cluster, request, tmp_path_factory) -> Iterator[dict[str, Run]]:
    """Every Snakemake run of this module, started at once and waited for.

    The SLURM runs spend most of their time waiting (for the scheduler, between status
    checks); running them beside the local run keeps the module's wall time near that
    of the longest run. Results are unaffected: one thread per job in every run.
    """
    scratch = module_scratch(request, tmp_path_factory, "runs")
    tmp = next(scratch)
    started = {
        "local": start(tmp / "local", cluster_config(), SEED_TARGET, *local_args()),
        "slurm": start(tmp / "slurm", {**cluster_config(), "shards": SHARDS}, SEED_TARGET,
                       *slurm_args(), *GPU_OVERRIDE, env=cluster.env()),
        "slurm-generic": start(tmp / "generic", cluster_config(), CAM_TARGET, *generic_args(),
                               *GPU_OVERRIDE, env=cluster.env()),
    }
    for profile, args in (("slurm", slurm_args()), ("slurm-generic", generic_args())):
        empty_voc = tmp / f"voc-{profile}"
        empty_voc.mkdir()
        # Killed after FAIL_TIMEOUT seconds (returncode None): a hang fails the test.
        started[f"failing-{profile}"] = start(tmp / f"failing-{profile}",
                                              failing_config(empty_voc), *args,
                                              env=cluster.env(), timeout=FAIL_TIMEOUT)
    yield wait_all(started)
    next(scratch, None)


@pytest.fixture(scope="module")
def local_run(runs):
    run = runs["local"]
    assert run.returncode == 0, run.output[-4000:]
    return run


@pytest.fixture(scope="module")
def slurm_run(runs):
    return runs["slurm"]


@pytest.fixture(scope="module")
def generic_run(runs):
    return runs["slurm-generic"]


def failing_root(run: Run) -> str:
    """The dataset root the failing run's config names (an empty folder)."""
    return yaml.safe_load((run.work / "config.yaml").read_text())["dataset"]["root"]


def _remote_jobs(planned: collections.Counter) -> collections.Counter:
    return collections.Counter({r: n for r, n in planned.items() if r != "all"})


def test_slurm_profile_sends_every_job_through_slurm(cluster, slurm_run, local_run, record_property):
    record_property("slurm_seconds", round(slurm_run.seconds, 1))
    record_property("local_seconds", round(local_run.seconds, 1))
    assert slurm_run.returncode == 0, slurm_run.output[-4000:]
    planned = _remote_jobs(planned_jobs(slurm_run.output))
    unsharded = _remote_jobs(planned_jobs(local_run.output))
    # Sharded: SHARDS make_cam jobs and one gather_cams per CAM file, the rest unchanged.
    assert planned == unsharded + collections.Counter(
        {"make_cam": (SHARDS - 1) * unsharded["make_cam"], "gather_cams": unsharded["make_cam"]})
    assert set(planned) == {"generate_synthetic", "prepare_data", "train_classifier",
                            "train_expansion", "train_shrinkage", "make_cam", "gather_cams",
                            "eval_seed", "compare_seeds"}
    submitted = slurm_submissions(slurm_run.output)
    assert collections.Counter(submitted.values()) == planned
    records = squeue_records(cluster)
    for jobid, rule in submitted.items():
        assert records[jobid]["state"] == "COMPLETED", (jobid, rule, records.get(jobid))
        assert records[jobid]["comment"].startswith(f"rule_{rule}"), records[jobid]
        # GPUs only where asked: the config pins the CPU (gpu=0), one rule overrides it.
        assert ("gpu:1" in records[jobid]["gres"]) == (rule == GPU_RULE), records[jobid]


def test_cam_shards_were_separate_slurm_jobs(cluster, slurm_run, local_run):
    """Each shard of each CAM file was a SLURM job of its own: SLURM's record of the job
    (its comment: rule and wildcards method_split_shard) names exactly one shard."""
    assert slurm_run.returncode == 0, slurm_run.output[-4000:]
    submitted = slurm_submissions(slurm_run.output)
    wildcards = slurm_job_wildcards(slurm_run.output)
    records = squeue_records(cluster)
    shards: dict[str, list[str]] = collections.defaultdict(list)
    for jobid, rule in submitted.items():
        if rule == "make_cam":
            assert records[jobid]["comment"] == f"rule_make_cam_wildcards_{wildcards[jobid]}"
            cam_file, shard = wildcards[jobid].rsplit("_", 1)
            shards[cam_file].append(shard)
    assert len(shards) == _remote_jobs(planned_jobs(local_run.output))["make_cam"] >= 2
    assert all(sorted(parts) == [str(k) for k in range(SHARDS)] for parts in shards.values()), shards


def test_slurm_results_equal_the_local_run(slurm_run, local_run):
    """The sharded cluster run's files equal the unsharded local run's, the gathered CAM
    files included; its only other files are the CAM shards."""
    assert slurm_run.returncode == 0, slurm_run.output[-4000:]
    for name in ("cluster/seeds/table6.md", "cluster/cams/esol/train.h5",
                 "cluster/models/shrinkage_esol.pt", "cluster/seeds/fig5_grid.png"):
        assert (slurm_run.results / name).is_file(), name
    produced = set(result_files(slurm_run))
    shard_files = {p for p in produced if "/shards/" in p}
    assert shard_files and all(".shard" in p and p.endswith(f"of{SHARDS}.h5") for p in shard_files)
    assert differences(local_run, slurm_run, sorted(set(result_files(local_run))
                                                    | (produced - shard_files))) == []


def test_slurm_generic_profile_sends_every_job_through_slurm(cluster, generic_run, local_run,
                                                             record_property):
    record_property("generic_seconds", round(generic_run.seconds, 1))
    assert generic_run.returncode == 0, generic_run.output[-4000:]
    planned = _remote_jobs(planned_jobs(generic_run.output))
    assert planned == collections.Counter({"generate_synthetic": 1, "prepare_data": 1,
                                           "train_classifier": 1, "make_cam": 1, "eval_seed": 1})
    submitted = generic_submissions(generic_run.output)
    records = squeue_records(cluster)
    rules = collections.Counter(records[j]["name"].removeprefix("esol-") for j in submitted)
    assert rules == planned
    for jobid in submitted:
        assert records[jobid]["state"] == "COMPLETED", records[jobid]
        assert ("gpu:1" in records[jobid]["gres"]) == (records[jobid]["name"] == f"esol-{GPU_RULE}")
    produced = [p for p in (str(f.relative_to(generic_run.results))
                            for f in generic_run.results.rglob("*") if f.is_file())
                if Path(p).parts[1] not in ("logs", "benchmarks")]
    assert "cluster/seeds/cam/train.json" in produced
    assert differences(local_run, generic_run, produced) == []


@pytest.mark.parametrize("profile", ["slurm", "slurm-generic"])
def test_a_failing_rule_stops_snakemake_with_an_error(cluster, runs, profile, record_property):
    run = runs[f"failing-{profile}"]
    record_property("seconds", round(run.seconds, 1))
    assert run.returncode is not None, f"still running after {FAIL_TIMEOUT} s:\n{run.output[-4000:]}"
    assert run.returncode != 0, run.output[-4000:]
    assert "Error in rule prepare_data" in run.output, run.output[-4000:]
    jobids = (list(slurm_submissions(run.output)) if profile == "slurm"
              else generic_submissions(run.output))
    # The profile resubmits a failed job `retries` times (for jobs killed for memory or
    # time, whose resources then grow); a job that fails for good is submitted 1 + retries
    # times, each ending FAILED, and then Snakemake stops.
    retries = yaml.safe_load((PROFILES / profile / "config.yaml").read_text()).get("retries", 0)
    assert len(jobids) == 1 + retries, run.output[-4000:]
    records = squeue_records(cluster)
    assert all(records[j]["state"] == "FAILED" for j in jobids)
    log = (run.results / "broken" / "logs" / "prepare_data.log").read_text()
    empty_voc = failing_root(run)
    assert "no train_aug list" in log and str(empty_voc) in log


def _status(cluster, jobid: str) -> str:
    out = subprocess.run([sys.executable, str(PROFILES / "slurm-generic" / "status.py"), jobid],
                         env=cluster.env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _wait_for(cluster, jobid: str, word: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while (status := _status(cluster, jobid)) != word and time.monotonic() < deadline:
        time.sleep(0.5)
    return status


def test_generic_status_script_reads_slurm_states(cluster, tmp_path):
    def sbatch(*args):
        return cluster.run("sbatch", "--parsable", f"--output={tmp_path}/%j.out", *args).strip()

    ok, bad, long = sbatch("--wrap=true"), sbatch("--wrap=false"), sbatch("--wrap=sleep 300")
    assert _wait_for(cluster, ok, "success") == "success"
    assert _wait_for(cluster, bad, "failed") == "failed"
    assert _wait_for(cluster, long, "running") == "running"
    cluster.run("scancel", long)  # killed by SLURM: no marker file would ever appear
    assert _wait_for(cluster, long, "failed") == "failed"
    assert _status(cluster, "999999") == "failed"  # unknown to squeue and sacct


def test_one_node_slurm_stops_exactly_the_daemons_it_started():
    cluster = OneNodeSlurm().start()
    pids = {name: proc.pid for name, proc in cluster.procs.items()}
    root = cluster.root
    assert set(pids) == {"munged", "slurmctld", "slurmd"}
    assert cluster.node_state() == "idle"
    cluster.stop()
    for name, pid in pids.items():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not root.exists()
