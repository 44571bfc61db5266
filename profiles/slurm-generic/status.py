#!/usr/bin/env python3
"""Job status for snakemake-executor-plugin-cluster-generic: ``status.py JOBID``.

Prints one word, as the plugin expects: ``running``, ``success`` or ``failed``.

Asks ``squeue`` first: it answers without an accounting daemon and keeps a finished
job for MinJobAge (300 s by default), while Snakemake asks every few seconds. A job
squeue no longer knows is looked up with ``sacct`` (clusters with accounting); if that
fails too, the job is reported failed, so Snakemake stops instead of waiting forever.
A controller that cannot be reached makes this script exit non-zero, which stops
Snakemake with the error rather than a silent hang.

Without a status command the plugin waits for marker files that the job script writes
when it ends: a job SLURM kills (time or memory limit, scancel, node failure) never
writes one, and Snakemake would wait forever.
"""

from __future__ import annotations

import subprocess
import sys
import time

SUCCESS = {"COMPLETED"}
# Anything not listed as still alive or successful counts as failed: FAILED, CANCELLED,
# TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL, DEADLINE, PREEMPTED (without requeue).
ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
         "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT",
         "RESV_DEL_HOLD", "STOPPED"}
ATTEMPTS = 3


def classify(state: str) -> str:
    """``running``/``success``/``failed`` for a SLURM state ('CANCELLED by 0' -> CANCELLED)."""
    state = state.strip().split()[0].rstrip("+").upper() if state.strip() else ""
    if state in SUCCESS:
        return "success"
    if state in ALIVE:
        return "running"
    return "failed"


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(cmd, 1, "", str(e))


def squeue_state(jobid: str) -> str | None:
    """The job's state, '' when squeue does not know the job, None when it cannot answer."""
    out = _run(["squeue", "--noheader", "--states=all", "--format=%T", f"--jobs={jobid}"])
    if out.returncode == 0:
        return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    if "Invalid job id" in out.stderr:
        return ""
    return None


def sacct_state(jobid: str) -> str:
    out = _run(["sacct", "--noheader", "--parsable2", "--allocations", "--format=State",
                f"--jobs={jobid}"])
    lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return lines[0] if lines else ""


def status(jobid: str) -> str:
    jobid = jobid.split(";")[0]  # "<id>;<cluster>" on multi-cluster setups
    for attempt in range(ATTEMPTS):
        state = squeue_state(jobid)
        if state is not None:
            break
        time.sleep(2 * (attempt + 1))
    else:
        raise SystemExit(f"status.py: squeue cannot reach the SLURM controller for job {jobid}")
    if not state:
        state = sacct_state(jobid)
    if not state:
        print(f"status.py: job {jobid} is unknown to squeue and sacct; counted as failed",
              file=sys.stderr)
    return classify(state)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: status.py JOBID")
    print(status(sys.argv[1]))
