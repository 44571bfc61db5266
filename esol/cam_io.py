"""CAMs in and out of the pipeline's HDF5 store, in IRN's per-image ``.npy`` format.

IRN (jiwoon-ahn/irn, ``step/make_cam.py``) saves one ``<id>.npy`` per image holding a
pickled dict ``{"keys": valid_cat, "cam": strided_cam, "high_res": highres_cam}``:
``keys`` is a torch int64 tensor of the 0-based class indices present in the image
label (no background), ``cam`` a torch float32 tensor (n, ceil(H/4), ceil(W/4)) and
``high_res`` a numpy float32 array (n, H, W), both max-normalised per class. IRN's
``eval_cam.py`` and ``make_sem_seg_labels.py`` and most of the code built on IRN read
exactly this, so :func:`export_irn_npy` lets CAMs made here feed that code, and
:func:`import_irn_npy` brings CAMs made elsewhere into the store
(:mod:`esol.cam` documents the store; its keys are 1-based mask values).

:func:`import_external` is rule ``import_cams``: a method declared ``{external: <path>}`` in
config gets its CAM file of a split from such a folder, or from one of our HDF5 CAM
files, checked image by image against the prepared dataset.

Command line::

    python -m esol.cam_io export results/synthetic/cams/esol/train.h5 out_dir/
    python -m esol.cam_io import npy_dir/ cams.h5 --classes 20
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from PIL import Image

from esol.cam import CamRecord, CamStore, strided_size, write_cams
from esol.data.voc import DatasetInfo
from esol.engine import fingerprint
from esol.utils import DatasetError

log = logging.getLogger(__name__)


def record_to_irn(rec: CamRecord) -> dict[str, Any]:
    """One store record as IRN's dict (0-based keys; float32 maps)."""
    return {
        "keys": torch.as_tensor(np.asarray(rec.keys, dtype=np.int64) - 1),
        "cam": torch.from_numpy(np.asarray(rec.cam, dtype=np.float32)),
        "high_res": np.asarray(rec.high_res, dtype=np.float32),
    }


def irn_to_record(d: Mapping[str, Any], where: str = "") -> CamRecord:
    """IRN's dict (torch tensors or numpy arrays) as a store record, shapes checked."""
    try:
        keys = np.asarray(_numpy(d["keys"]), dtype=np.int64).reshape(-1) + 1
        cam = np.asarray(_numpy(d["cam"]), dtype=np.float32)
        high = np.asarray(_numpy(d["high_res"]), dtype=np.float32)
    except (KeyError, TypeError) as err:
        raise DatasetError(f"{where}: not an IRN CAM dict with keys, cam, high_res ({err})") from None
    n = len(keys)
    if cam.ndim != 3 or high.ndim != 3 or cam.shape[0] != n or high.shape[0] != n:
        raise DatasetError(f"{where}: {n} keys but cam {cam.shape} and high_res {high.shape}; "
                           "each needs one map per key")
    if strided_size(high.shape[1:], 4) != cam.shape[1:]:
        raise DatasetError(f"{where}: cam {cam.shape[1:]} is not high_res {high.shape[1:]} at "
                           "stride 4 (IRN's get_strided_size)")
    if not (np.isfinite(cam).all() and np.isfinite(high).all()):
        raise DatasetError(f"{where}: maps hold NaN or inf")
    return CamRecord(keys=keys, cam=cam, high_res=high)


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def export_irn_npy(store_path: str | os.PathLike, out_dir: str | os.PathLike,
                   ids: Sequence[str] | None = None) -> int:
    """Write every record of a CAM store (or ``ids``) as ``out_dir/<id>.npy``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with CamStore(store_path) as store:
        todo = list(ids) if ids is not None else store.ids()
        for image_id in todo:
            np.save(out / f"{image_id}.npy", record_to_irn(store[image_id]), allow_pickle=True)
    return len(todo)


def read_irn_npy(path: str | os.PathLike) -> CamRecord:
    """One IRN ``.npy`` file as a store record."""
    try:
        d = np.load(path, allow_pickle=True).item()
    except (OSError, ValueError, EOFError) as err:
        raise DatasetError(f"cannot read CAM file {path}: {err}") from None
    if not isinstance(d, Mapping):
        raise DatasetError(f"{path}: holds {type(d).__name__}, not IRN's CAM dict")
    return irn_to_record(d, str(path))


def import_irn_npy(npy_dir: str | os.PathLike, out_path: str | os.PathLike, ids: Sequence[str],
                   num_classes: int, attrs: Mapping[str, Any] | None = None,
                   labels: Mapping[str, Sequence[int]] | None = None,
                   check: Callable[[CamRecord, str, str], None] | None = None,
                   what: str = "images") -> int:
    """Store ``npy_dir/<id>.npy`` for every id in ``ids`` into a CAM file at ``out_path``.

    ``labels`` (id -> 1-based mask values of the image label), when given, must match
    each file's keys: CAMs of other classes than the label's would make every later
    stage score the wrong classes. ``check(record, id, path)``, when given, replaces
    these checks. A missing file is named, the first one only (``what`` the ids are, for
    the message).
    """
    npy_dir = Path(npy_dir)
    missing = [i for i in ids if not (npy_dir / f"{i}.npy").is_file()]
    if missing:
        raise DatasetError(f"external CAMs: {len(missing)} of {len(ids)} {what} have no file in "
                           f"{npy_dir}, first {npy_dir / (missing[0] + '.npy')}")

    def records() -> Iterator[tuple[str, CamRecord]]:
        for image_id in ids:
            path = npy_dir / f"{image_id}.npy"
            rec = read_irn_npy(path)
            if check is not None:
                check(rec, image_id, str(path))
            elif rec.keys.size and (rec.keys.min() < 1 or rec.keys.max() > num_classes):
                raise DatasetError(f"{path}: class index outside 0..{num_classes - 1}")
            if labels is not None and sorted(rec.keys.tolist()) != sorted(labels[image_id]):
                raise DatasetError(f"{path}: keys {sorted((rec.keys - 1).tolist())} differ from the "
                                   f"image label {sorted(k - 1 for k in labels[image_id])} (0-based)")
            yield image_id, rec

    meta = {"source": f"external IRN npy: {npy_dir}", **(attrs or {})}
    write_cams(out_path, records(), total=len(ids), attrs=meta)
    return len(ids)


def _check_record(rec: CamRecord, image_id: str, where: str, info: DatasetInfo, split: str) -> None:
    """A record's classes against the dataset's (and the image label's) and its maps'
    size against the image's: a CAM of another class set or resolution would make every
    later stage score the wrong pixels."""
    k = info.num_classes
    if rec.keys.size and (rec.keys.min() < 1 or rec.keys.max() > k):
        raise DatasetError(f"{where}: class index {int(rec.keys.max()) - 1} outside 0..{k - 1} "
                           f"(the dataset has {k} classes)")
    labels = info.labels.get(split)
    if labels is not None and sorted(rec.keys.tolist()) != sorted(labels[image_id]):
        raise DatasetError(f"{where}: classes {sorted((rec.keys - 1).tolist())} differ from the "
                           f"image label {sorted(c - 1 for c in labels[image_id])} (0-based)")
    with Image.open(info.layout.image(image_id)) as im:
        size = (im.height, im.width)
    if tuple(rec.high_res.shape[1:]) != size:
        raise DatasetError(f"{where}: high_res is {tuple(rec.high_res.shape[1:])} but image "
                           f"{image_id!r} is {size} (height, width)")


def import_external(source: str | os.PathLike, out_path: str | os.PathLike,
                    dataset_json: str | os.PathLike, split: str, manifest: str = "") -> int:
    """Rule ``import_cams``: the CAM file of ``split`` from an external source.

    ``source`` is a folder of IRN ``.npy`` files (``<id>.npy``, IRN's ``make_cam.py``
    format) or one of the pipeline's HDF5 CAM files holding at least the split's images.
    Every image of the split must be there (the first missing one is named); each record's
    classes must be the image label's and its ``high_res`` the image's size. ``manifest``
    identifies the source's files (the rule's param: names, sizes, mtimes); it goes into
    the file's ``inputs`` attribute, which what reads the file fingerprints.
    """
    info = DatasetInfo.from_json(dataset_json)
    ids = info.ids(split)
    src = Path(os.path.expanduser(source))
    inputs = {"source": str(src), "manifest": manifest, "split": split, "ids": ids}
    attrs = {"source": f"external: {src}", "inputs": fingerprint(inputs)}
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        return import_irn_npy(src, out_path, ids, info.num_classes, attrs=attrs,
                              check=lambda rec, i, where: _check_record(rec, i, where, info, split),
                              what=f"images of {split!r}")
    if not src.is_file():
        raise DatasetError(f"external CAMs: {src} is neither a folder of IRN .npy files nor a "
                           "CAM file (.h5)")
    with CamStore(src) as store:
        missing = [i for i in ids if i not in store]
        if missing:
            raise DatasetError(f"external CAMs: {len(missing)} of {len(ids)} images of {split!r} "
                               f"are not in {src}, first {missing[0]!r}")

        def stored() -> Iterator[tuple[str, CamRecord]]:
            for image_id in ids:
                rec = store[image_id]
                where = f"{src} [{image_id}]"
                if rec.cam.shape[0] != rec.keys.size or rec.high_res.shape[0] != rec.keys.size:
                    raise DatasetError(f"{where}: {rec.keys.size} keys but cam {rec.cam.shape} "
                                       f"and high_res {rec.high_res.shape}")
                _check_record(rec, image_id, where, info, split)
                yield image_id, rec

        write_cams(out_path, stored(), total=len(ids), attrs=attrs)
    return len(ids)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m esol.cam_io", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="CAM store (.h5) -> a folder of IRN .npy files")
    ex.add_argument("store")
    ex.add_argument("out_dir")
    im = sub.add_parser("import", help="a folder of IRN .npy files -> a CAM store (.h5)")
    im.add_argument("npy_dir")
    im.add_argument("store")
    im.add_argument("--classes", type=int, required=True, help="number of classes (no background)")
    im.add_argument("--ids", help="a file with one image id a line (default: every .npy in npy_dir)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cmd == "export":
        n = export_irn_npy(args.store, args.out_dir)
        log.info("wrote %d IRN CAM files to %s", n, args.out_dir)
    else:
        ids = (Path(args.ids).read_text().split() if args.ids
               else sorted(p.stem for p in Path(args.npy_dir).glob("*.npy")))
        n = import_irn_npy(args.npy_dir, args.store, ids, args.classes)
        log.info("stored %d images' CAMs in %s", n, args.store)


if __name__ == "__main__":
    main()
