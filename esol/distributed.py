"""Data-parallel training on several processes of one node: torchrun's engine, not ours.

A training rule with ``processes`` > 1 starts that many workers through
:func:`torch.distributed.launcher.api.elastic_launch` (what ``torchrun --standalone``
runs), or joins them when it was itself started by ``torchrun`` (``WORLD_SIZE`` set).
Each worker holds the whole model and a slice of every global batch; after each
backward pass the gradients are averaged over the workers with
``torch.distributed.all_reduce`` — the reduction DistributedDataParallel performs — so
a step sees the same gradient as one process with the whole batch. We reduce the
gradients ourselves instead of wrapping the model in ``DistributedDataParallel``
because the ESOL stages call parts of the network (the frozen backbone, one sampler)
directly; DDP's hooks would only see a forward through the wrapper.

What stays as in one process, by construction: the global batch size (each of W
workers takes ``batch_size / W`` of every batch), the learning-rate schedule (steps
are global batches), the batch order and each sample's augmentation (fixed by
``(seed, epoch, index)``, see :mod:`esol.engine`), and the checkpoints (rank 0 writes
them; every rank resumes from the same file). What does not: BatchNorm layers in
training mode normalise each worker's slice with its own statistics (as DDP without
SyncBatchNorm does), so a classifier trained from scratch with BN differs slightly
from a one-process run; frozen-BN stages (Expansion, Shrinkage, IRN's and DeepLab's
frozen backbones) are unaffected. CUDA workers use NCCL, CPU workers gloo.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes checkpoints, histories and logs."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device_type: str) -> bool:
    """Join the process group torchrun (or :func:`launch`) described in the environment.

    Returns True when this process is one of several. The backend follows the device:
    NCCL for CUDA, gloo for the CPU.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    log.info("rank %d of %d joined (%s)", rank(), world_size(), backend)
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over the workers (DDP's all-reduce)."""
    if not is_distributed():
        return
    w = world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(w)


def mean_over_workers(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Per-step statistics averaged over the workers, for the log of the global batch."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= world_size()
    return dict(zip(keys, t.tolist(), strict=True))


class RankSlice(Sampler[int]):
    """This worker's part of every global batch of ``base`` (a sampler of global order).

    Global batch ``b`` holds positions ``b*B .. (b+1)*B - 1`` of ``base``; worker ``r``
    of ``W`` takes the ``r``-th of its ``W`` equal slices, so the union over workers of
    each step is exactly the one-process batch.
    """

    def __init__(self, base: Sequence[int] | Sampler[int], batch_size: int, rank: int,
                 world: int) -> None:
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} does not split over {world} processes")
        self.base, self.batch, self.rank, self.world = base, batch_size, rank, world
        self.local = batch_size // world

    def __iter__(self) -> Iterator[int]:
        order = list(self.base)
        usable = len(order) - len(order) % self.batch
        for start in range(0, usable, self.batch):
            lo = start + self.rank * self.local
            yield from order[lo:lo + self.local]

    def __len__(self) -> int:
        n = len(self.base)
        return (n - n % self.batch) // self.world


def device_for(device: torch.device) -> torch.device:
    """Join the process group if there is one; a CUDA worker takes the GPU of its local rank."""
    init_from_env(device.type)
    if is_distributed() and device.type == "cuda":
        return torch.device("cuda", local_rank())
    return device


def _worker(fn: Callable[..., Any], args: tuple, kwargs: dict, log_path: str | None,
            threads: int, error_dir: str) -> Any:
    """One launched process: rank 0 logs to the rule's log, the others warnings only."""
    from esol.utils import ESOLError

    torch.set_num_threads(max(1, threads))
    r = int(os.environ.get("RANK", "0"))
    root = logging.getLogger()
    handler = (logging.FileHandler(log_path) if log_path and r == 0
               else logging.StreamHandler())
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank{r} %(levelname)s %(message)s",
                                           "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if r == 0 else logging.WARNING)
    try:
        return fn(*args, **kwargs)
    except ESOLError as err:
        # The parent re-raises this message as the same error type: one clear line,
        # not elastic's traceback of a child process.
        with open(os.path.join(error_dir, f"rank{r}"), "w") as f:
            f.write(f"{type(err).__name__}\n{err}")
        raise


def launch(fn: Callable[..., Any], processes: int, *args: Any, log_path: str | None = None,
           **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in ``processes`` workers on this node; rank 0's result.

    ``fn`` must be importable (a module-level function) and its arguments picklable.
    A single process, or a process already inside a torchrun group, runs ``fn`` directly.
    The workers share this process's torch threads; rank 0 appends to ``log_path``.
    An :class:`esol.utils.ESOLError` in a worker is raised here with its message.
    """
    if processes <= 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return fn(*args, **kwargs)
    import tempfile

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from esol import utils

    cfg = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes,
                       run_id=f"esol-{uuid.uuid4().hex[:8]}", rdzv_backend="c10d",
                       rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5,
                       start_method="spawn")
    log.info("starting %d training processes (torch.distributed elastic launch)", processes)
    for h in logging.getLogger().handlers:
        h.flush()
    threads = max(1, torch.get_num_threads() // processes)
    with tempfile.TemporaryDirectory() as errors:
        try:
            results = elastic_launch(cfg, _worker)(fn, args, kwargs, log_path, threads, errors)
        except ChildFailedError:
            reports = sorted(Path(errors).iterdir())
            if not reports:
                raise
            kind, _, message = reports[0].read_text().partition("\n")
            raise getattr(utils, kind, utils.ESOLError)(message) from None
    return results[0]
