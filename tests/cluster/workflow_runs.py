"""Running the pipeline's tiny cluster config through Snakemake, and reading what happened.

Shared by tests/test_cluster.py and benchmarks/cluster_walltime.py: the config, the
Snakemake calls (local, profiles/slurm, profiles/slurm-generic), the SLURM job ids a
run's log names, and the comparison of two runs' result files.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PROFILES = REPO / "profiles"
NAME = "cluster"  # dataset.name: results under results/cluster/
# Both runs of a comparison use one thread per rule: the CPU results are deterministic
# for a fixed thread count, and two one-thread jobs share the 2-core node at once.
THREADS = 1
# Seconds before a Snakemake call counts as hung (the tiny DAG takes 1-5 minutes).
RUN_TIMEOUT = 900
# A failing job is submitted 1 + retries (2) times, each waiting on the slurm plugin's
# status checks: 5 min 7 s on a loaded 2-core machine, so 300 s was too tight.
FAIL_TIMEOUT = 600


def cluster_config() -> dict:
    """The smallest config that runs every kind of rule: 2 methods, 1 epoch, 28 images."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg = copy.deepcopy(cfg)
    cfg["device"] = "cpu"
    cfg["dataset"]["name"] = NAME
    cfg["dataset"]["synthetic"].update(
        num_classes=2, image_size=[64, 72],
        counts={"train_aug": 16, "train": 8, "val": 4, "test": 0, "tune": 0},
        body_signal=0.5, clutter=[1, 2])
    cfg["classifier"].update(epochs=1, batch_size=8, resize_long=[56, 72], crop=64)
    for stage in ("expansion", "shrinkage"):
        cfg[stage].update(epochs=1, batch_size=8, lr=0.001)
    cfg["methods"] = {m: cfg["methods"][m] for m in ("cam", "esol")}
    # One classifier epoch learns next to nothing, on purpose (these tests are about the
    # cluster, not the model): the learning checks (tests/test_learning.py) stay off.
    cfg.setdefault("checks", {})["enabled"] = False
    # A fixed preset threshold: no tuning split, so the planned jobs are the cluster tests'.
    cfg["dataset"]["splits"] = [s for s in cfg["dataset"]["splits"] if s != "tune"]
    cfg["dataset"]["tuning_split"] = None
    cfg["refine"]["threshold"] = 0.15
    cfg["cam"] = {"scales": [1.0], "flip": True}
    cfg["figures"].update(fig5_methods=["cam", "esol"], fig5_images=2, recall_methods=["cam", "esol"])
    # Seeds only (the runs target Table 6): every kind of network rule is already there.
    cfg["refine"]["methods"] = []
    cfg["segmentation"].update(supervised=False, methods=[])
    return cfg


def failing_config(root: Path) -> dict:
    """A config whose first job (prepare_data) fails: a VOC folder without split lists."""
    cfg = cluster_config()
    cfg["dataset"].update(name="broken", source="voc", root=str(root))
    return cfg


@dataclass
class Run:
    work: Path
    returncode: int | None  # None: killed after its timeout
    output: str  # stdout + stderr
    seconds: float

    @property
    def results(self) -> Path:
        return self.work / "results"


class Started:
    """A Snakemake run in progress, in a session of its own; its output goes to a file
    beside ``work`` (no pipe to fill while other runs are waited for)."""

    def __init__(self, work: Path, cmd: list[str], env: dict | None, timeout: float):
        self.work, self.timeout = work, timeout
        self.end: float | None = None
        self.killed = False
        self.out = work.parent / f"{work.name}.snakemake.out"
        with open(self.out, "wb") as f:
            self.start = time.monotonic()
            self.proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=f,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def poll(self) -> bool:
        """Whether it has ended (noting when); one still going ``timeout`` seconds after
        its start is killed (its process group, by the PID we started) and counts as
        ended with ``returncode`` None."""
        if self.end is not None:
            return True
        if self.proc.poll() is not None:
            self.end = time.monotonic()
        elif time.monotonic() - self.start > self.timeout:
            self.kill()
        return self.end is not None

    def kill(self) -> None:
        """Stop it if it still runs: SIGTERM to its process group (Snakemake cancels its
        SLURM jobs), SIGKILL 30 s later."""
        if self.proc.poll() is not None:
            return
        self.end = time.monotonic()
        self.killed = True
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wait(self) -> Run:
        while not self.poll():
            time.sleep(0.5)
        return Run(self.work, None if self.killed else self.proc.returncode,
                   self.out.read_text(errors="replace"), self.end - self.start)


def wait_all(runs: dict[str, Started]) -> dict[str, Run]:
    """Wait for runs started together; each one's seconds end when it ended. If the
    waiting is interrupted, the runs still going are stopped."""
    try:
        while not all([r.poll() for r in runs.values()]):
            time.sleep(0.5)
    finally:
        for r in runs.values():
            r.kill()
    return {name: r.wait() for name, r in runs.items()}


def start(work: Path, cfg: dict, *args: str, env: dict | None = None,
          timeout: float = RUN_TIMEOUT) -> Started:
    """Start ``snakemake`` on this repository's Snakefile in ``work`` with ``cfg``."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(work), "--configfile",
           str(work / "config.yaml"), "--max-threads", str(THREADS), *args]
    return Started(work, cmd, env, timeout)


def snakemake(work: Path, cfg: dict, *args: str, env: dict | None = None,
              timeout: float = RUN_TIMEOUT) -> Run:
    """``snakemake`` ... in ``work`` with ``cfg``, to its end (or ``timeout``)."""
    return start(work, cfg, *args, env=env, timeout=timeout).wait()


def local_args() -> list[str]:
    return ["--profile", str(PROFILES / "local"), "--cores", "2"]


def slurm_args() -> list[str]:
    # The profile's first status check comes 20 s after a submission; 2 s here keeps
    # the tiny DAG quick (the plugin adds 10 s per check that finds nothing finished).
    return ["--profile", str(PROFILES / "slurm"), "--slurm-init-seconds-before-status-checks", "2"]


def generic_args() -> list[str]:
    return ["--profile", str(PROFILES / "slurm-generic"), "--seconds-between-status-checks", "2"]


def planned_jobs(output: str) -> collections.Counter:
    """The "Job stats" table Snakemake prints before running: jobs per rule."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:"))
    counts = collections.Counter()
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def slurm_submissions(output: str) -> dict[str, str]:
    """SLURM job id -> rule, from snakemake-executor-plugin-slurm's log lines."""
    pattern = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+?)/")
    return {m.group(1): m.group(2) for m in pattern.finditer(output)}


def slurm_job_wildcards(output: str) -> dict[str, str]:
    """SLURM job id -> the job's wildcard values joined by "_" (e.g. ``esol_train_1`` for
    make_cam's method, split and shard), from the slurm plugin's per-job log folder."""
    pattern = re.compile(r"SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_\w+?/([^/\s]*)/\d+\.log\)")
    return {m.group(1): m.group(2) for m in pattern.finditer(output)}


def generic_submissions(output: str) -> list[str]:
    """SLURM job ids from snakemake-executor-plugin-cluster-generic's log lines."""
    return re.findall(r"Submitted job \d+ with external jobid '(\d+)'", output)


def result_files(run: Run) -> dict[str, Path]:
    """Result files by path relative to results/, logs and benchmarks (timings) aside."""
    root = run.results
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[1] not in ("logs", "benchmarks")}


def _same_content(a, b, names_a: dict[str, str], names_b: dict[str, str]) -> bool:
    """Equal nested content; a string that is the SHA-1 of one of the run's result files
    (``esol.engine.file_digest`` of a stage's input) stands for that file's name."""
    import torch

    def same(x, y) -> bool:
        if isinstance(x, dict):
            return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)):
            return type(x) is type(y) and len(x) == len(y) and all(map(same, x, y))
        if torch.is_tensor(x):
            return torch.is_tensor(y) and x.dtype == y.dtype and torch.equal(x, y)
        if isinstance(x, str) and isinstance(y, str) and x in names_a:
            return names_a[x] == names_b.get(y)
        return x == y

    return same(a, b)


def _digests(files: dict[str, Path]) -> dict[str, str]:
    """SHA-1 of each checkpoint and dataset index -> its name (the inputs stages record)."""
    from esol.engine import file_digest

    return {file_digest(p): name for name, p in files.items()
            if name.endswith((".pt", "dataset.json"))}


def _same_h5(a: Path, b: Path) -> bool:
    import h5py
    import numpy as np

    def contents(path: Path) -> tuple[dict, dict]:
        data: dict = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda n, o: data.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
            attrs = {k: np.asarray(v).tolist() for k, v in f.attrs.items() if k != "inputs"}
        return data, attrs

    (da, aa), (db, ab) = contents(a), contents(b)
    return aa == ab and da.keys() == db.keys() and all(np.array_equal(da[k], db[k]) for k in da)


def differences(ref: Run, other: Run, files: list[str] | None = None) -> list[str]:
    """Result files of ``other`` that differ from ``ref``'s (all of ``files`` if given).

    Byte equality, except two file types whose bytes name where they were written:

    * ``*.pt`` checkpoints: ``torch.save`` names the zip archive's inner folder after
      the file it writes, and ``esol.engine.save_checkpoint`` writes to a random
      temporary name (``atomic_path``) before renaming; two local runs differ the same
      way. Compared by content: every tensor equal (dtype and values), every other
      entry (architecture, config, history) equal, except that the SHA-1 of an input
      (the dataset index, the previous stage's checkpoint: ``esol.engine.file_digest``)
      must name the same file in each run, as those files' bytes differ as described.
    * ``data/dataset.json`` records the dataset's absolute root, inside each run's
      working directory. Compared with ``root`` taken out, and ``root`` checked to be
      the run's own results/<name>/synthetic.
    * ``*.h5`` CAM files: their ``inputs`` attribute (the resume fingerprint) holds that
      root too. Compared dataset by dataset and attribute by attribute, ``inputs`` aside.
    """
    import torch

    mine, theirs = result_files(ref), result_files(other)
    digests_mine, digests_theirs = _digests(mine), _digests(theirs)
    names = files if files is not None else sorted(set(mine) | set(theirs))
    diffs = []
    for name in names:
        if name not in mine or name not in theirs:
            diffs.append(f"{name}: only in {'one run' if name in mine or name in theirs else 'neither'}")
            continue
        a, b = mine[name], theirs[name]
        if name.endswith(".pt"):
            same = _same_content(torch.load(a, weights_only=False), torch.load(b, weights_only=False),
                                 digests_mine, digests_theirs)
        elif name.endswith("data/dataset.json"):
            ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
            roots = ja.pop("root"), jb.pop("root")
            same = ja == jb and all(Path(r) == run.results / NAME / "synthetic"
                                    for r, run in zip(roots, (ref, other)))
        elif name.endswith(".h5"):
            same = _same_h5(a, b)
        else:
            same = a.read_bytes() == b.read_bytes()
        if not same:
            diffs.append(name)
    return diffs


def squeue_records(cluster) -> dict[str, dict[str, str]]:
    """Jobs SLURM still holds (finished ones for MinJobAge): id -> state, name, comment, gres.

    ``gres`` joins the per-job and per-node TRES requests (``--gpus=1`` is per job,
    ``--gres=gpu:1`` per node).
    """
    fields = ["JobID", "State", "Name", "Comment", "tres-per-job", "tres-per-node"]
    out = cluster.run("squeue", "--noheader", "--states=all",
                      "--Format=" + ",".join(f"{f}:300|" for f in fields))
    records = {}
    for line in out.splitlines():
        jobid, state, name, comment, per_job, per_node = (v.strip() for v in line.split("|")[:6])
        records[jobid] = {"state": state, "name": name, "comment": comment,
                          "gres": f"{per_job} {per_node}"}
    return records
