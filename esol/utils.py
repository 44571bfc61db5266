"""Small shared pieces: clear errors, device choice, atomic writes, rule logging."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from esol.progress import LineStream

log = logging.getLogger("esol")


class ESOLError(RuntimeError):
    """An error the user can fix (bad input file, bad config value).

    Entry scripts print only its message, never a traceback: the message names the
    file or config key at fault.
    """


class DatasetError(ESOLError):
    """A dataset file is missing, unreadable or holds values it must not."""


class ConfigError(ESOLError):
    """A config value is inconsistent with another or with the machine."""


class TrainingError(ESOLError):
    """Training diverged (NaN/inf loss, offsets beyond their bound)."""


def select_device(name: str = "auto") -> torch.device:
    """The one place that decides between CUDA and CPU (config key ``device``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device' is {name!r} but no CUDA device is visible")
    return torch.device(name)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for config key ``amp``, or None for full float32.

    ``auto``: mixed precision on CUDA only (bfloat16 where supported, else float16);
    ``bf16``: bfloat16 autocast on any device, the CPU included (fast on CPUs with
    AVX512-BF16 or AMX, slow elsewhere); ``fp32``: float32 everywhere.
    """
    if amp == "fp32":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    raise ConfigError(f"config key 'amp' must be auto, bf16 or fp32, got {amp!r}")


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; CPU runs are then repeatable bit for bit."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    On any exception the temporary file is removed, so a reader never sees a
    half-written output. The file gets the mode a plain ``open`` would give it (0666
    less the umask), not ``mkstemp``'s private 0600: collaborators on a shared cluster
    must be able to read models and reports.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except BaseException as err:
        tmp_path.unlink(missing_ok=True)
        if isinstance(err, Exception) and no_space_path(err) is not None:
            # Writers (PIL, torch, json) report a full disk without the file's name.
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from err
        raise


def current_umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def no_space_path(err: BaseException) -> str | None:
    """The file a "no space left on device" error was writing, "" when it names none,
    None when ``err`` is another error.

    ``OSError`` carries ``errno.ENOSPC``; h5py wraps it in its own errors, OSError or
    RuntimeError ("file write failed: ... errno = 28, error message = 'No space left on
    device'"), so the text is matched too, along the exception's chain.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err):
            return str(getattr(err, "filename", None) or "")
        err = err.__cause__ or err.__context__
    return None


def tqdm_kwargs() -> dict:
    """Progress-bar settings: dense on a terminal, one line every 10 s in a log file."""
    interactive = sys.stderr.isatty()
    return {"mininterval": 0.5 if interactive else 10.0, "dynamic_ncols": interactive,
            "file": sys.stderr}


@contextlib.contextmanager
def rule_logging(log_path: str | os.PathLike | None, threads: int = 1) -> Iterator[logging.Logger]:
    """Run a rule's body with logging (and stderr, so tqdm too) going to its log file.

    Torch is limited to the rule's ``threads``. An :class:`ESOLError` ends the rule with
    its one-line message on the console and in the log, and exit status 1; so does a full
    disk ("no space left on device: <path>"), whatever library was writing.
    """
    torch.set_num_threads(max(1, int(threads)))
    console = sys.__stderr__
    stream = open(log_path, "w", buffering=1) if log_path else None  # noqa: SIM115
    old_stderr = sys.stderr
    if stream is not None:
        sys.stderr = LineStream(stream)  # tqdm redraws become lines, not one long line
    handler = logging.StreamHandler(stream or old_stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield log
    except ESOLError as err:
        log.error("%s", err)
        if stream is not None:
            print(f"ERROR: {err}", file=console)
        raise SystemExit(1) from None
    except Exception as err:
        where = no_space_path(err)
        if where is None:
            raise
        message = f"no space left on device: {where or log_path or 'output'}"
        log.error("%s (%s)", message, err)
        print(f"ERROR: {message}", file=console)
        raise SystemExit(1) from None
    finally:
        root.removeHandler(handler)
        sys.stderr = old_stderr
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def evaluating(net: torch.nn.Module) -> Iterator[None]:
    """``net`` in eval mode inside the block, every module's own mode restored after it
    (a learning check scores a network mid-training without touching its BatchNorm)."""
    modes = {m: m.training for m in net.modules()}
    net.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode
