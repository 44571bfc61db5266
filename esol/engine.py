"""The training loop every stage shares: poly learning rate, periodic checkpoints, resume.

A run interrupted at any point resumes from its last periodic checkpoint and ends in
the same weights as an uninterrupted run: the batch order is a permutation fixed by
``(seed, epoch)`` and each sample's augmentation by ``(seed, epoch, index)``, so no
RNG state needs saving.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from esol import distributed
from esol.integrity import advice, check_finite_weights
from esol.progress import StageProgress, stage_name
from esol.utils import (ConfigError, TrainingError, autocast, tqdm_kwargs,
                        write_bytes_atomic)

log = logging.getLogger(__name__)

StepFn = Callable[[dict], tuple[torch.Tensor, dict[str, float]]]


class EpochSampler(Sampler[int]):
    """A permutation fixed by ``(seed, epoch)``, starting at position ``start``."""

    def __init__(self, n: int, seed: int, epoch: int, start: int = 0) -> None:
        self.n, self.seed, self.epoch, self.start = n, seed, epoch, start

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g)[self.start:].tolist())

    def __len__(self) -> int:
        return self.n - self.start


def poly_lr(base: float, step: int, max_step: int, power: float = 0.9) -> float:
    """``base * (1 - step / max_step) ** power`` (IRN's PolyOptimizer, DeepLab's poly)."""
    return base * (1.0 - step / max_step) ** power


def warmup_poly_lr(base: float, step: int, max_step: int, power: float = 0.9,
                   warmup_steps: int = 0) -> float:
    """:func:`poly_lr` after a linear warm-up from ``base / warmup_steps`` over the first
    ``warmup_steps`` steps (Goyal et al. 2017); ``warmup_steps`` 0 is :func:`poly_lr`."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    return poly_lr(base, step, max_step, power)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-1 of a file's bytes: identifies an input (checkpoint, dataset) by content."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_digest(net: torch.nn.Module) -> str:
    """SHA-1 of a network's parameters and buffers (names and bytes): which weights made an
    output, whatever file or notebook they came from."""
    h = hashlib.sha1()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint(section: Mapping[str, Any]) -> str:
    """A stable text of the config a checkpoint was made with, to refuse stale resumes."""
    return json.dumps(section, sort_keys=True, default=str)


def resumable(stored: str | None, section: Mapping[str, Any], what: str,
              partial: str | os.PathLike) -> bool:
    """Whether a partial output stored with fingerprint ``stored`` may be resumed now.

    The one rule every resumable output follows (training checkpoints, CAM files, label
    folders, predictions): a partial is reused only when it was made from the same
    inputs (checkpoint and dataset digests) and the same params as this run; otherwise
    it is discarded, with a log line saying why.
    """
    if stored is None:
        log.warning("%s: discarding %s, which records no inputs (written by an older "
                    "version)", what, partial)
        return False
    if stored != fingerprint(section):
        log.warning("%s: discarding %s, made from other inputs or params than this run",
                    what, partial)
        return False
    return True


def fit(*, params_owner: torch.nn.Module, optimizer: torch.optim.Optimizer, dataset: Dataset,
        step_fn: StepFn, batch_size: int, epochs: int, seed: int, resume_path: str | os.PathLike,
        checkpoint_every: int, config: Mapping[str, Any], num_workers: int = 0,
        poly_power: float = 0.9, desc: str = "train",
        on_epoch_end: Callable[[dict[str, float]], None] | None = None,
        amp: torch.dtype | None = None, warmup_steps: int = 0) -> list[dict[str, float]]:
    """Train ``params_owner`` with ``step_fn`` and return one record per epoch.

    ``step_fn(batch)`` returns the loss to minimise and floats to log (averaged per
    epoch). The learning rate of each parameter group decays from its initial value by
    :func:`poly_lr` (after ``warmup_steps`` of linear warm-up). Every ``checkpoint_every`` steps, model, optimizer and history are
    saved to ``resume_path``; a later call with the same ``config`` resumes there. A
    non-finite loss raises :class:`TrainingError`; ``on_epoch_end`` may raise it too.
    ``amp`` runs ``step_fn`` under autocast to that dtype (float16 with loss scaling).

    Inside a process group (:mod:`esol.distributed`) each of W workers takes
    ``batch_size / W`` of every global batch, gradients are averaged over the workers
    before the step, logged figures are the workers' mean, and rank 0 alone writes the
    resume checkpoint: the schedule and the checkpoints are the one-process run's.
    """
    world, rank = distributed.world_size(), distributed.rank()
    if batch_size % world:
        raise ConfigError(f"{desc}: batch_size {batch_size} does not split over {world} processes")
    steps_per_epoch = len(dataset) // batch_size
    if len(dataset) == 0:
        raise ConfigError(f"{desc}: no training images: no image of the training split holds a "
                          "labelled object (every mask is background or ignore)")
    if steps_per_epoch == 0:
        raise ConfigError(f"{desc}: batch_size {batch_size} exceeds the {len(dataset)} training "
                          "images; lower the stage's batch_size")
    max_step = steps_per_epoch * epochs
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    step, history, acc = 0, [], {}
    resume_path = Path(resume_path)
    if resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=False)
        if resumable(state.get("fingerprint"), config, desc, resume_path):
            params_owner.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step, history, acc = state["step"], state["history"], state["acc"]
            log.info("%s: resuming from %s at step %d of %d", desc, resume_path, step, max_step)

    device = next(params_owner.parameters()).device
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    main = distributed.is_main()
    bar = tqdm(total=max_step, initial=step, desc=desc, unit="step",
               **{**tqdm_kwargs(), "disable": not main or tqdm_kwargs().get("disable")})
    progress = StageProgress(stage_name(desc, resume_path), max_step, steps_per_epoch, start_step=step)
    while step < max_step:
        epoch, offset = divmod(step, steps_per_epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        sampler = EpochSampler(len(dataset), seed, epoch, offset * batch_size)
        if world > 1:
            sampler = distributed.RankSlice(sampler, batch_size, rank, world)
        loader = DataLoader(dataset, batch_size=batch_size // world, drop_last=True,
                            sampler=sampler, num_workers=num_workers, persistent_workers=False)
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = warmup_poly_lr(group["initial_lr"], step, max_step, poly_power,
                                             warmup_steps)
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                     for k, v in batch.items()}
            with autocast(amp, device):
                loss, stats = step_fn(batch)
            # Every worker sees the same (averaged) figures, so all stop together.
            stats = distributed.mean_over_workers({"loss": loss.item(), **stats}, device)
            if not math.isfinite(stats["loss"]):
                raise TrainingError(f"{desc}: loss became {stats['loss']} at step {step} "
                                    f"(epoch {epoch + 1}); lower {advice(desc)}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            distributed.average_gradients(params_owner.parameters())
            scaler.step(optimizer)
            scaler.update()
            step += 1
            for k, v in stats.items():
                acc[k] = acc.get(k, 0.0) + v
            acc["_n"] = acc.get("_n", 0) + 1
            bar.update()
            bar.set_postfix(loss=f"{stats['loss']:.4f}", refresh=False)
            if main:
                progress.update(step, stats["loss"])
            if step % steps_per_epoch == 0:
                n = acc.pop("_n")
                record = {"epoch": epoch + 1, "step": step,
                          "lr": optimizer.param_groups[0]["lr"],
                          **{k: v / n for k, v in acc.items()}}
                history.append(record)
                acc = {}
                if distributed.is_main():
                    log.info("%s epoch %d/%d: %s", desc, epoch + 1, epochs,
                             ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                       if k not in ("epoch", "step")))
                if on_epoch_end is not None:
                    on_epoch_end(record)
            if step % checkpoint_every == 0 and step < max_step:
                _save_resume(resume_path, params_owner, optimizer, step, history, acc, config)
    bar.close()
    check_finite_weights(params_owner, desc, history)
    return history


def _save_resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                 history: list, acc: dict, config: Mapping[str, Any]) -> None:
    if distributed.is_main():
        write_bytes_atomic(path, checkpoint_bytes({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "history": history, "acc": acc, "fingerprint": fingerprint(config)}))
    distributed.barrier()  # no worker reads a checkpoint rank 0 is still writing


def checkpoint_bytes(payload: Mapping[str, Any]) -> bytes:
    """``torch.save`` of ``payload`` as bytes, the same bytes for the same payload.

    Saved to a file, torch's zip archive names its records after the file (here a
    random temporary name), so two identical runs gave different files; saved to a
    buffer, the archive name is fixed and ``sha256sum`` can compare runs.
    """
    buffer = io.BytesIO()
    torch.save(dict(payload), buffer)
    return buffer.getvalue()


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """Write a final stage checkpoint atomically (byte-identical for identical payloads);
    rank 0 only, under several processes."""
    if distributed.is_main():
        write_bytes_atomic(path, checkpoint_bytes(payload))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint not found: {path}") from None


def history_csv(path: str | os.PathLike, history: list[dict[str, float]]) -> None:
    """The per-epoch records as CSV (for curves in the report); rank 0 only."""
    if not distributed.is_main():
        return
    from esol.tables import write_csv

    write_csv(path, history)
