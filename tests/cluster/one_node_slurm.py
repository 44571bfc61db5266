"""A real one-node SLURM cluster on this machine, for the cluster tests and by hand.

As root on Debian: installs ``munge slurmctld slurmd slurm-client`` with apt-get when
they are missing, writes a ``slurm.conf`` for this host into a temporary directory
(no cgroups: ``proctrack/linuxproc``, ``task/none``, ``select/cons_tres`` with memory as
a consumable and ``DefMemPerCPU``; no accounting daemon), starts ``munged``,
``slurmctld`` and ``slurmd`` in the foreground as child processes on free ports, waits
until the node is idle, and on exit cancels the cluster's jobs and stops exactly the
three daemons it started, by PID. Nothing is written outside the temporary directory
except the apt-get install; the host's own munge/slurm configuration is never read.

Clients reach the cluster through ``SLURM_CONF`` (see :meth:`OneNodeSlurm.env`). One
wrinkle: snakemake-executor-plugin-slurm-jobstep (0.6.1), which runs a rule inside its
sbatch job, strips every ``SLURM_*`` variable but the job's identity from the
environment of the ``srun`` it starts, ``SLURM_CONF`` included. On a real cluster srun
then reads /etc/slurm/slurm.conf (or fetches the configuration from slurmctld); this
private cluster's configuration lives in a temporary directory, so :meth:`env` puts a
two-line ``srun`` first on ``PATH`` that sets ``SLURM_CONF`` back and execs the real one.

By hand::

    python tests/cluster/one_node_slurm.py -- sinfo
    python tests/cluster/one_node_slurm.py -- snakemake --profile profiles/slurm ...

runs the command against a fresh cluster and tears it down when the command exits.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")
SBIN = ("/usr/sbin", "/sbin")
PARTITION = "esol"
CLUSTER = "esoltest"
# Memory per CPU given to a job that asks for none (MB).
DEF_MEM_PER_CPU = 1000
# Seconds SLURM keeps a finished job visible to squeue (default 300): squeue-based status
# checks need it above their polling interval (profiles/slurm), and the tests read the
# records of a whole run after it ends.
MIN_JOB_AGE = 3600


class SlurmUnavailable(RuntimeError):
    """This machine cannot host the test cluster (the message says why)."""


def _which(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(name, path=path)


def missing_programs() -> list[str]:
    return [p for p in (*DAEMONS, *CLIENTS) if _which(p) is None]


def unavailable_reason() -> str | None:
    """Why the cluster cannot run here, or None when it can (possibly after apt-get)."""
    if not sys.platform.startswith("linux"):
        return "a one-node SLURM needs Linux"
    if os.geteuid() != 0:
        return "starting munged/slurmctld/slurmd (and installing them) needs root"
    if missing_programs() and shutil.which("apt-get") is None:
        return (f"SLURM programs {missing_programs()} are missing and there is no apt-get "
                f"to install {' '.join(PACKAGES)}")
    return None


def ensure_installed() -> float:
    """Install the Debian packages when a program is missing; seconds spent (0 if none).

    Service start-up by the packages' maintainer scripts is irrelevant here: the daemons
    this module starts use their own key, socket, ports and state directory.
    """
    reason = unavailable_reason()
    if reason:
        raise SlurmUnavailable(reason)
    if not missing_programs():
        return 0.0
    start = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if run.returncode != 0:  # stale package lists on a fresh machine: update once
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if run.returncode != 0 or missing_programs():
        raise RuntimeError(f"apt-get install {' '.join(PACKAGES)} failed:\n"
                           f"{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    return time.monotonic() - start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> str:
    """This host's node line as slurmd reports it (CPUs, sockets, cores, RealMemory)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("NodeName=")), None)
    if line is None:
        raise RuntimeError(f"slurmd -C did not describe this host: {out!r}")
    return " ".join(f for f in line.split() if not f.startswith("NodeName="))


class OneNodeSlurm:
    """A private single-node SLURM cluster, started on entry and stopped on exit.

    ``fake_gpu``: the node declares one generic resource ``gpu`` backed by /dev/null
    (Slurm 22.05 insists on a device file), so that jobs asking for a GPU
    (``--gpus=1``, ``--gres=gpu:1``) are scheduled and accounted on a machine without
    one; the job sees ``CUDA_VISIBLE_DEVICES=0`` and no device.

    ``oversubscribe``: jobs that may share one core (the partition's
    ``OverSubscribe=FORCE:N``); above 1, several Snakemake runs submitting at once do
    not wait in the queue for the node's few cores. Memory and GPUs stay exclusive.
    """

    def __init__(self, root: Path | None = None, fake_gpu: bool = False,
                 oversubscribe: int = 1, start_timeout: float = 60):
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="esol-slurm-")) if root is None else Path(root)
        self.fake_gpu = fake_gpu
        self.oversubscribe = oversubscribe
        self.start_timeout = start_timeout
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}
        self.install_seconds = 0.0
        self.start_seconds = 0.0

    # -- configuration -------------------------------------------------------------
    def _write_files(self) -> None:
        for d in ("etc", "munge", "state", "spool", "log", "run", "bin"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        # munged wants its socket's folders searchable by all; the key stays 0400.
        os.chmod(self.root, 0o711)
        os.chmod(self.root / "munge", 0o711)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        gres = " Gres=gpu:1" if self.fake_gpu else ""
        r = self.root
        lines = [
            f"ClusterName={CLUSTER}",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/run/slurmctld.pid",
            f"SlurmdPidFile={r}/run/slurmd.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            # No cgroups: processes are tracked by parentage, tasks are not confined.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            f"DefMemPerCPU={DEF_MEM_PER_CPU}",
            "MpiDefault=none",
            "SwitchType=switch/none",
            # No accounting daemon: sacct answers "accounting storage is disabled".
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            f"MinJobAge={MIN_JOB_AGE}",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            # The main scheduler stops at the first job that cannot start (one waiting for
            # the GPU); backfill starts those behind it, here every 5 s instead of 30 s.
            "SchedulerParameters=bf_interval=5",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "KillWait=5",
            *(["GresTypes=gpu"] if self.fake_gpu else []),
            f"NodeName={self.node} NodeAddr=127.0.0.1 {node_hardware()}{gres} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP"
            + (f" OverSubscribe=FORCE:{self.oversubscribe}" if self.oversubscribe > 1 else ""),
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        shim = self.root / "bin" / "srun"  # see the module docstring
        shim.write_text(f"#!/bin/sh\nSLURM_CONF='{self.conf}' exec '{_which('srun')}' \"$@\"\n")
        os.chmod(shim, 0o755)
        if self.fake_gpu:  # read from slurm.conf's folder
            (self.root / "etc" / "gres.conf").write_text(
                f"NodeName={self.node} Name=gpu File=/dev/null\n")

    def env(self, base: dict | None = None) -> dict:
        """An environment whose SLURM clients talk to this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = os.pathsep.join([str(self.root / "bin"), env.get("PATH", "")])
        return env

    # -- life cycle ----------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")
        # A session of its own: a Ctrl-C meant for the caller does not reach the daemon;
        # stop() ends it, by PID.
        self.procs[name] = subprocess.Popen([_which(name), *args], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env(), start_new_session=True)
        log.close()

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} while starting:\n"
                                   + self.daemon_logs())

    def daemon_logs(self, tail: int = 3000) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def _wait(self, what: str, ready) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {self.start_timeout} s waiting for {what}:\n"
                           + self.daemon_logs())

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """A SLURM client command against this cluster; its stdout."""
        out = subprocess.run([_which(args[0]), *args[1:]], env=self.env(), capture_output=True,
                             text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out.stdout

    def node_state(self) -> str:
        out = subprocess.run([_which("sinfo"), "-h", "-N", "-o", "%T"], env=self.env(),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    def _node_idle(self) -> bool:
        state = self.node_state()
        if any(bad in state for bad in ("drain", "inval", "down", "fail")) and \
                "slurmd" in self.procs and self.procs["slurmd"].poll() is None:
            # A configuration the controller rejects does not heal by waiting; a node
            # still "down" before slurmd registers does, so give it a few seconds.
            if time.monotonic() - self._spawned_at > 10:
                raise RuntimeError(f"node state {state!r}:\n{self.run('scontrol', 'show', 'node')}"
                                   + self.daemon_logs())
        return state == "idle"

    def start(self) -> "OneNodeSlurm":
        self.install_seconds = ensure_installed()
        t0 = time.monotonic()
        try:
            self._write_files()
            self._spawn("munged", ["--foreground", "--force", f"--socket={self.munge_socket}",
                                   f"--key-file={self.root}/munge/munge.key",
                                   f"--pid-file={self.root}/run/munged.pid",
                                   f"--seed-file={self.root}/munge/munged.seed",
                                   f"--log-file={self.root}/log/munged.log"])
            self._wait("munged's socket", self.munge_socket.exists)
            # -i: ignore state a previous run could have left (there is none: fresh dir).
            self._spawn("slurmctld", ["-D", "-i", "-f", str(self.conf)])
            self._spawn("slurmd", ["-D", "-f", str(self.conf), "-N", self.node])
            self._spawned_at = time.monotonic()
            self._wait("the node to be idle", self._node_idle)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def cancel_all_jobs(self, timeout: float = 60) -> None:
        """Cancel this cluster's jobs and wait until none is pending, running or completing."""
        if "slurmctld" not in self.procs or self.procs["slurmctld"].poll() is not None:
            return
        self.run("scancel", f"--partition={PARTITION}", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run([_which("squeue"), "-h", "-t", "PD,R,CG,CF,S", "-o", "%i"],
                                 env=self.env(), capture_output=True, text=True, timeout=10)
            if out.returncode != 0 or not out.stdout.strip():
                return
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel the jobs, then stop slurmd, slurmctld and munged, in that order, by PID."""
        try:
            self.cancel_all_jobs()
        finally:
            for name in ("slurmd", "slurmctld", "munged"):
                proc = self.procs.pop(name, None)
                if proc is None or proc.poll() is not None:
                    continue
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            if self._own_root:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "OneNodeSlurm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fake-gpu", action="store_true",
                        help="declare one GPU (backed by /dev/null) on the node")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="command run with SLURM_CONF set (default: sinfo)")
    args = parser.parse_args(argv)
    command = [c for c in args.command if c != "--"] or ["sinfo"]
    reason = unavailable_reason()
    if reason:
        print(f"one_node_slurm: {reason}", file=sys.stderr)
        return 2
    with OneNodeSlurm(fake_gpu=args.fake_gpu) as cluster:
        print(f"one_node_slurm: installed in {cluster.install_seconds:.1f} s, started in "
              f"{cluster.start_seconds:.1f} s; SLURM_CONF={cluster.conf}", file=sys.stderr)
        # The command runs in our process group: Ctrl-C reaches it, and then us.
        proc = subprocess.Popen(command, env=cluster.env())
        try:
            return proc.wait()
        except KeyboardInterrupt:
            return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
