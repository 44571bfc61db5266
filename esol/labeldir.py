"""Folders of label maps (CRF outputs, IR labels, pseudo masks): built whole or not at all.

A folder is filled under ``<folder>.partial`` one atomic PNG at a time and renamed when
every image is in, so readers never see a half-built folder and an interrupted rule
resumes with the images still missing, but only when the partial was made from the
same inputs: the partial holds a fingerprint (:func:`esol.engine.fingerprint`) of
what its labels depend on (input digests and params); a mismatch discards it.
:func:`parallel_map` spreads per-image work over processes (dense CRF is
single-threaded C++).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from esol.engine import fingerprint, resumable
from esol.utils import tqdm_kwargs

log = logging.getLogger(__name__)

T = TypeVar("T")


# The partial's record of its inputs; not a PNG, so no reader mistakes it for a label.
STAMP = "inputs.fingerprint"


class LabelDir:
    """The folder ``path``, written through ``path.partial``, made from ``inputs``.

    ``inputs`` is everything the labels depend on (digests of the files read, the params
    that shape them); a partial folder left by a run with other inputs is discarded.
    """

    suffix = ".png"  # the per-image files; a subclass may hold others (PSA's .npz scores)

    def __init__(self, path: str | os.PathLike, inputs: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        stamp = self.partial / STAMP
        if self.partial.is_dir() and any(self.partial.glob("*" + self.suffix)):
            stored = stamp.read_text() if stamp.is_file() else None
            if not resumable(stored, inputs, str(self.path), self.partial):
                shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        for leftover in self.partial.glob(".*"):  # temporary files of a killed run
            leftover.unlink()
        stamp.write_text(fingerprint(inputs))

    def todo(self, ids: Sequence[str]) -> list[str]:
        """The ids whose PNG is not in the partial folder yet (a resumed run skips the rest)."""
        done = {p.stem for p in self.partial.glob("*" + self.suffix)}
        todo = [i for i in ids if i not in done]
        if len(todo) < len(ids):
            log.info("resuming %s: %d of %d images already written", self.path, len(ids) - len(todo),
                     len(ids))
        return todo

    def finish(self) -> None:
        """Rename the complete partial folder to its final name (PNGs only)."""
        (self.partial / STAMP).unlink(missing_ok=True)
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.partial, self.path)


def dir_digest(path: str | os.PathLike) -> str:
    """SHA-1 over the names and bytes of a folder's PNGs: a label folder's content, for
    resume fingerprints (as :func:`esol.engine.file_digest` for one file)."""
    h = hashlib.sha1()
    for png in sorted(Path(path).glob("*.png")):
        h.update(png.name.encode())
        h.update(png.read_bytes())
    return h.hexdigest()


def parallel_map(fn: Callable[[str], T], items: Sequence[str], workers: int, desc: str,
                 initializer: Callable[..., Any] | None = None,
                 initargs: Iterable[Any] = ()) -> Iterator[T]:
    """``fn`` over ``items`` in ``workers`` forked processes (in this one when 1), with a
    progress bar; results come in order. ``fn`` must be a module-level function;
    ``initializer(*initargs)`` runs once in each worker (open files there, not here:
    an HDF5 handle must not cross a fork)."""
    bar = tqdm(total=len(items), desc=desc, unit="img", **tqdm_kwargs())
    try:
        if workers <= 1 or len(items) <= 1:
            if initializer is not None:
                initializer(*initargs)
            for item in items:
                yield fn(item)
                bar.update()
            return
        # fork: the entry script is Snakemake's generated module and must not run again in
        # a child, which spawn/forkserver would do; the workers do not use torch.
        ctx = multiprocessing.get_context("fork")
        chunk = max(1, min(16, len(items) // (workers * 4)))
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=initializer,
                                 initargs=tuple(initargs)) as pool:
            for result in pool.map(fn, items, chunksize=chunk):
                yield result
                bar.update()
    finally:
        bar.close()
