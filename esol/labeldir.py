"""Folders of label maps (CRF outputs, IR labels, pseudo masks): built whole or not at all.

A folder is filled under ``<folder>.partial`` one atomic PNG at a time and renamed when
every image is in, so readers never see a half-built folder and an interrupted rule
resumes with the images still missing, but only when the partial was made from the
same inputs: the partial holds a fingerprint (:func:`esol.engine.fingerprint`) of
what its labels depend on (input digests and params); a mismatch discards it.
:func:`parallel_map` spreads per-image work over processes (dense CRF is
single-threaded C++).

Sharded (config ``shards``; docs/cluster.md): shard k of N of a folder is a folder of
its own holding the images of :func:`esol.shards.shard_ids` k, written the same way,
whose partial's fingerprint names the shard too; the finished shard keeps a stamp
(``shard.json``: k, N and the fingerprint of the shared inputs). :func:`gather_label_dirs`
checks the N stamps and images and joins them into exactly the folder an unsharded
run writes (the same files, nothing else).
"""

from __future__ import annotations

import hashlib
import json
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
from esol.shards import WHOLE, Shard, shard_ids
from esol.utils import DatasetError, atomic_path, tqdm_kwargs

log = logging.getLogger(__name__)

T = TypeVar("T")


# The partial's record of its inputs; not a PNG, so no reader mistakes it for a label.
STAMP = "inputs.fingerprint"
# A finished shard's record of which part it is and of the inputs all parts share.
SHARD_STAMP = "shard.json"


class LabelDir:
    """The folder ``path``, written through ``path.partial``, made from ``inputs``.

    ``inputs`` is everything the labels depend on (digests of the files read, the params
    that shape them); a partial folder left by a run with other inputs is discarded.
    ``shard`` ``(k, n)`` with n > 1 makes ``path`` part k of n of a folder (see the
    module's docstring); the caller writes only :func:`esol.shards.shard_ids` k.
    """

    suffix = ".png"  # the per-image files; a subclass may hold others (PSA's .npz scores)

    def __init__(self, path: str | os.PathLike, inputs: Mapping[str, Any],
                 shard: Shard = WHOLE, suffix: str | None = None) -> None:
        if suffix is not None:
            self.suffix = suffix
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.shard = (int(shard[0]), int(shard[1]))
        self.inputs = dict(inputs)
        # A partial of another part or another shard count holds other images.
        own = self.inputs if self.shard == WHOLE else {**self.inputs, "shard": list(self.shard)}
        stamp = self.partial / STAMP
        if self.partial.is_dir() and any(self.partial.glob("*" + self.suffix)):
            stored = stamp.read_text() if stamp.is_file() else None
            if not resumable(stored, own, str(self.path), self.partial):
                shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        for leftover in self.partial.glob(".*"):  # temporary files of a killed run
            leftover.unlink()
        stamp.write_text(fingerprint(own))

    def todo(self, ids: Sequence[str]) -> list[str]:
        """The ids whose PNG is not in the partial folder yet (a resumed run skips the rest)."""
        done = {p.stem for p in self.partial.glob("*" + self.suffix)}
        todo = [i for i in ids if i not in done]
        if len(todo) < len(ids):
            log.info("resuming %s: %d of %d images already written", self.path, len(ids) - len(todo),
                     len(ids))
        return todo

    def finish(self) -> None:
        """Rename the complete partial folder to its final name (PNGs only; a shard also
        its ``shard.json`` for the gather)."""
        (self.partial / STAMP).unlink(missing_ok=True)
        if self.shard != WHOLE:
            stamp = {"shard": self.shard[0], "shards": self.shard[1],
                     "inputs": fingerprint(self.inputs)}
            with atomic_path(self.partial / SHARD_STAMP) as tmp:
                tmp.write_text(json.dumps(stamp))
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.partial, self.path)


def _shard_stamp(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / SHARD_STAMP).read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"label shard {folder} has no readable {SHARD_STAMP} (not a finished "
                           f"shard: {err})") from None


def _place(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (no second copy of the bytes), else a copy;
    either way it appears whole or not at all."""
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def gather_label_dirs(shard_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                      ids: Sequence[str], suffix: str = LabelDir.suffix) -> int:
    """Join the N finished shard folders of a label folder into ``out_dir``.

    ``shard_dirs[k]`` must be shard k of N = ``len(shard_dirs)`` (its ``shard.json``),
    all made from the same inputs, holding exactly the ``suffix`` files of
    :func:`esol.shards.shard_ids` ``(ids, k, N)``; anything else is a
    :class:`DatasetError` naming the folder. The result is built through
    :class:`LabelDir` (``out_dir.partial``, resumable, renamed when whole), so it holds
    what an unsharded run writes: one file per id of ``ids``, byte for byte the shards'.
    Returns the number of files.
    """
    folders = [Path(d) for d in shard_dirs]
    n = len(folders)
    if n == 0:
        raise DatasetError(f"no label shards to gather into {out_dir}")
    stamps = [_shard_stamp(d) for d in folders]
    source: dict[str, Path] = {}
    for k, (folder, stamp) in enumerate(zip(folders, stamps)):
        if (stamp.get("shard"), stamp.get("shards")) != (k, n):
            raise DatasetError(f"label shard {folder} is part {stamp.get('shard')} of "
                               f"{stamp.get('shards')}, but is gathered as part {k} of {n}")
        if stamp.get("inputs") != stamps[0].get("inputs"):
            raise DatasetError(f"label shards {folders[0]} and {folder} were made from different "
                               "inputs or params (their shard.json fingerprints differ)")
        have = {p.name[:-len(suffix)] for p in folder.glob("*" + suffix)}
        want = shard_ids(ids, k, n)
        missing = [i for i in want if i not in have]
        extra = sorted(have.difference(want))
        if missing or extra:
            what = (f"lacks {len(missing)} of its {len(want)} images, first {missing[0]!r}"
                    if missing else f"holds {len(extra)} images not in its part, first {extra[0]!r}")
            raise DatasetError(f"label shard {folder} {what}")
        source.update((i, folder / f"{i}{suffix}") for i in want)
    target = LabelDir(out_dir, {"gather": stamps[0]["inputs"], "shards": n, "ids": list(ids)},
                      suffix=suffix)
    for image_id in target.todo(list(ids)):
        _place(source[image_id], target.partial / f"{image_id}{suffix}")
    target.finish()
    return len(ids)


def gather_split(dataset_json: str | os.PathLike, split: str,
                 shard_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> int:
    """A gather rule (e.g. ``gather_crf_seed``): the shards of a label folder over the
    images of ``split`` in the prepared dataset, joined by :func:`gather_label_dirs`."""
    from esol.data.voc import DatasetInfo  # the dataset layer, only where a split is named

    n = gather_label_dirs(shard_dirs, out_dir, DatasetInfo.from_json(dataset_json).ids(split))
    log.info("gathered %d labels of %s from %d shards into %s", n, split, len(shard_dirs), out_dir)
    return n


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
