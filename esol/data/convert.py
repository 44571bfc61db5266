"""Shared machinery of the dataset conversions (SBD masks, COCO masks).

Conversions write one file per image, atomically, into a VOC-layout folder under
``results/`` (or ``dataset.converted_root``), never into the user's dataset. They are
resumable: a file that exists and is newer than every source it was made from is kept,
so an interrupted run picks up where it stopped. Work runs in a pool of worker
processes started *before* the parent loads large annotation files, and tasks are fed
lazily, so no process holds more than its own images.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from esol.utils import DatasetError, atomic_path, tqdm_kwargs

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def is_fresh(path: str | os.PathLike, sources: Sequence[str | os.PathLike]) -> bool:
    """True when ``path`` exists and is at least as new as every existing source.

    This is what makes a conversion resumable: outputs are written atomically, so one
    that exists is complete; one older than its source is redone.
    """
    try:
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return False
    for src in sources:
        try:
            if os.stat(src).st_mtime_ns > mtime:
                return False
        except FileNotFoundError:
            continue
    return True


def link_atomic(target: str | os.PathLike, link: str | os.PathLike) -> None:
    """Make ``link`` a symbolic link to ``target``, replacing any old one atomically."""
    link = Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Write a split list (one id a line) atomically."""
    with atomic_path(path, suffix=".txt") as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines))


def write_manifest(path: str | os.PathLike, summary: Mapping[str, Any]) -> None:
    """A conversion's summary as JSON, atomically: written last, it is the rule's output."""
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")


def _call(payload: tuple[Callable[[Any], Any], Any]) -> Any:
    fn, item = payload
    return fn(item)


@contextmanager
def worker_pool(workers: int) -> Iterator[Callable[..., Iterator[Any]]]:
    """A ``imap(fn, items, total, desc)`` over ``workers`` forked processes (or inline).

    Start it before loading large inputs: the workers are forked at once, small, and
    receive one task at a time through a pipe that blocks when they fall behind (the
    task feed is lazy), so memory stays bounded whatever the dataset size. Results come
    back in order, with a progress bar.
    """
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None

    def imap(fn: Callable[[T], R], items: Iterable[T], total: int, desc: str) -> Iterator[R]:
        if pool is None:
            it: Iterable[R] = map(fn, items)
        else:
            chunk = max(1, min(64, total // (workers * 16)))
            it = pool.imap(_call, ((fn, x) for x in items), chunksize=chunk)
        yield from tqdm(it, total=total, desc=desc, unit="img", **tqdm_kwargs())

    try:
        yield imap
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if pool is not None:
            pool.terminate()


def missing_report(folder: str | os.PathLike, what: str, missing: Sequence[str], total: int,
                   show: int = 5) -> str:
    """One line of a by-folder report: ``<folder>: N of M <what> missing (a, b, ...)``."""
    examples = ", ".join(missing[:show]) + (", ..." if len(missing) > show else "")
    return f"{folder}: {len(missing)} of {total} {what} missing ({examples})"


def require_dir(path: str | os.PathLike, what: str, key: str) -> Path:
    """``path`` as a folder, or one error naming it, what it should hold and the config key."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{what} folder not found: {path} (config key {key})")
    return path


def require_file(path: str | os.PathLike, what: str, key: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path} (config key {key})")
    return path
