"""What a user watching a run sees: one concise line per epoch on the console, with an ETA.

Under Snakemake every rule's stderr goes to its log file (:func:`esol.utils.rule_logging`),
so progress bars never reach the console and ``snakemake`` shows "30 of 36 steps" for as
long as a training job runs. :class:`StageProgress` writes to the job's *original*
stderr, which Snakemake passes through to the console, one line per finished epoch and
a heartbeat line within long epochs::

    13:15:11 classifier epoch 2/4 done: step 12/24 (50%), loss 0.2478 | elapsed 0:00:04, ETA 0:00:04

:class:`LineStream` makes the log side readable: tqdm redraws its bar with carriage
returns, which a log file shows as one endless line; through a ``LineStream`` each
redraw becomes its own line.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (``0:01:05`` for 65 s); ``?`` when unknown or not finite."""
    if seconds is None or not seconds == seconds or seconds in (float("inf"), float("-inf")):
        return "?"
    m, s = divmod(int(round(max(0.0, seconds))), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def stage_name(desc: str, resume_path: str | os.PathLike | None = None) -> str:
    """The checkpoint's name (``models/expansion_clip.pt.partial`` -> ``expansion_clip``),
    which tells apart parallel jobs of one stage (``expansion`` with and without
    clipping); ``desc`` when there is no path."""
    name = Path(resume_path).name.split(".")[0] if resume_path else ""
    return name or desc


def progress_line(stage: str, epoch: int, epochs: int, step: int, total: int, loss: float | None,
                  elapsed: float, eta: float | None, done: bool, clock: str) -> str:
    """The console line: stage, epoch i/n, step, loss (epoch mean so far), elapsed, ETA."""
    state = "done" if done else "running"
    loss_text = "" if loss is None else f", loss {loss:.4g}"
    pct = 100 * step / total if total else 100.0
    return (f"{clock} {stage} epoch {epoch}/{epochs} {state}: step {step}/{total} ({pct:.0f}%)"
            f"{loss_text} | elapsed {format_duration(elapsed)}, ETA {format_duration(eta)}")


class StageProgress:
    """Per-epoch (and heartbeat) progress lines of one training stage, with an ETA.

    Call :meth:`update` after every optimisation step with the global step count and
    the step's loss. A line is printed when an epoch ends and, within an epoch, at most
    every ``heartbeat`` seconds. The ETA is the remaining steps at the mean speed of the
    steps this process ran (a resumed run does not count the steps it skipped).

    ``stream`` defaults to the process's original stderr (the console under Snakemake,
    whose job stderr goes to a log file); when that stream is also ``sys.stderr``
    (a notebook, a terminal, where tqdm's bar is already visible) nothing is printed
    unless ``stream`` is given.
    """

    def __init__(self, stage: str, total_steps: int, steps_per_epoch: int, start_step: int = 0,
                 stream: IO[str] | None = None, heartbeat: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stage, self.total, self.per_epoch = stage, int(total_steps), max(1, int(steps_per_epoch))
        self.epochs = -(-self.total // self.per_epoch)
        self.start_step, self.heartbeat, self.clock = int(start_step), float(heartbeat), clock
        if stream is None:
            console = sys.__stderr__
            stream = console if console is not None and console is not sys.stderr else None
        self.stream = stream
        self.t0 = self.last = clock()
        self._sum, self._n = 0.0, 0

    def update(self, step: int, loss: float | None = None) -> str | None:
        """Record step ``step`` (1-based global count); returns the line printed, if any."""
        if loss is not None and loss == loss:
            self._sum, self._n = self._sum + float(loss), self._n + 1
        now = self.clock()
        done = step % self.per_epoch == 0 or step >= self.total
        if not done and now - self.last < self.heartbeat:
            return None
        elapsed = now - self.t0
        ran = step - self.start_step
        eta = (self.total - step) * elapsed / ran if ran > 0 else None
        epoch = min(self.epochs, (step - 1) // self.per_epoch + 1) if step > 0 else 1
        line = progress_line(self.stage, epoch, self.epochs, step, self.total,
                             self._sum / self._n if self._n else None, elapsed, eta, done,
                             time.strftime("%H:%M:%S"))
        if done:
            self._sum, self._n = 0.0, 0
        self.last = now
        if self.stream is not None:
            print(line, file=self.stream, flush=True)
        return line


class LineStream:
    """A text stream that turns carriage-return redraws (tqdm) into separate lines.

    Writes without ``\\r`` pass through unchanged; a write containing ``\\r`` is split
    there and each non-empty piece is written as a line of its own.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if "\r" not in text:
            return self.stream.write(text)
        for piece in text.split("\r"):
            piece = piece.strip("\n")
            if piece.strip():
                self.stream.write(piece + "\n")
        return len(text)

    def isatty(self) -> bool:
        return False

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)
