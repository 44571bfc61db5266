"""Localization maps (CAM, Eq. 2) at several scales, and their HDF5 store.

As IRN's ``make_cam``: for each scale the image and its mirror go through the network,
``ReLU(w_c^T F)`` of both is summed (the mirror flipped back), every scale's map is
resized to a common size and summed, then each class map of the classes in the image
label is divided by its spatial max (+1e-5). Two resolutions are kept: ``cam`` at
stride 4 (what IRN's relation labels use) and ``high_res`` at image size.

Store contract (docs/pipeline.md, make_cam): one HDF5 file per (method, split), one group per
image id with ``keys`` (int16 mask values of the classes, 1..K), ``cam`` (float16,
(n, ceil(H/4), ceil(W/4))) and ``high_res`` (float16, (n, H, W)); file attributes name
the scales, flip and source checkpoint. Files are written under a temporary name and
renamed when complete; an interrupted extraction resumes from the partial file only
when the partial's ``inputs`` attribute (a fingerprint of the network's weights, the
dataset and the params, :func:`cam_inputs`) matches this run's; otherwise the partial
is discarded. Every map is checked for NaN/inf before it is stored.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from esol.data import transforms as T
from esol.data.voc import DatasetInfo, read_image
from esol.engine import file_digest, fingerprint, resumable, weights_digest
from esol.integrity import check_finite_map
from esol.models.esol_net import ESOLNet
from esol.shards import shard_ids
from esol.utils import DatasetError, autocast, no_space_path, tqdm_kwargs

log = logging.getLogger(__name__)

EPS = 1e-5


def strided_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """``ceil(size / stride)`` per side (IRN ``get_strided_size``)."""
    return ((size[0] + stride - 1) // stride, (size[1] + stride - 1) // stride)


def strided_up_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """``size`` rounded up to a multiple of ``stride`` (IRN ``get_strided_up_size``)."""
    h, w = strided_size(size, stride)
    return h * stride, w * stride


def sum_over_scales(image: np.ndarray, scales: Sequence[float], flip: bool,
                    device: torch.device | str,
                    maps_of: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """IRN's multi-scale geometry (``step/make_cam.py``): the image at each scale (and
    its flip, as a batch of 2) goes through ``maps_of``, which returns (K, h, w) maps at
    the network's stride; each is resized to the stride-4 size and, padded to a multiple
    of 16 then cropped, to the image size, and both are summed over scales.

    Returns ``(strided, high_res)``: (K, ceil(H/4), ceil(W/4)) and (K, H, W), float32.
    """
    device = torch.device(device)
    size = image.shape[:2]
    s4, up16 = strided_size(size, 4), strided_up_size(size, 16)
    strided = high = None
    for scale in scales:
        x = torch.from_numpy(T.to_chw(T.normalize(T.rescale(image, scale))))[None].to(device)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        cam = maps_of(x)[None].float()
        a = F.interpolate(cam, s4, mode="bilinear", align_corners=False)[0]
        b = F.interpolate(cam, up16, mode="bilinear", align_corners=False)[0, :, : size[0], : size[1]]
        strided = a if strided is None else strided + a
        high = b if high is None else high + b
    return strided, high


@torch.no_grad()
def multiscale_cam(net: ESOLNet, image: np.ndarray, scales: Sequence[float], flip: bool,
                   device: torch.device | str = "cpu",
                   amp: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised CAMs of all K classes summed over scales (and flips).

    Returns ``(strided, high_res)``: (K, ceil(H/4), ceil(W/4)) and (K, H, W), float32
    (the network may run under autocast to ``amp``; sums and resizing are float32).
    """
    device = torch.device(device)

    def maps_of(x: torch.Tensor) -> torch.Tensor:
        with autocast(amp, device):
            cam = net.cam(x).float()
        return cam[0] + cam[1].flip(-1) if flip else cam[0]

    return sum_over_scales(image, scales, flip, device, maps_of)


def normalize_cam(cam: torch.Tensor, keys: np.ndarray) -> torch.Tensor:
    """Keep the classes ``keys`` (mask values, 1-based) and divide each by its max + 1e-5."""
    sel = cam[torch.as_tensor(np.asarray(keys, dtype=np.int64) - 1, device=cam.device)]
    return sel / (sel.amax(dim=(1, 2), keepdim=True) + EPS)


@dataclass
class CamRecord:
    keys: np.ndarray  # (n,) mask values
    cam: np.ndarray  # (n, h4, w4)
    high_res: np.ndarray  # (n, H, W)


class CamStore:
    """Read access to a CAM file: ``store[id]`` gives a :class:`CamRecord`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except (OSError, FileNotFoundError) as err:
            raise DatasetError(f"cannot open CAM file {self.path}: {err}") from None

    @property
    def attrs(self) -> Mapping[str, Any]:
        return self._file.attrs

    def ids(self) -> list[str]:
        return list(self._file.keys())

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._file

    def __getitem__(self, image_id: str) -> CamRecord:
        if image_id not in self._file:
            raise DatasetError(f"CAM file {self.path} has no entry for image {image_id!r}")
        g = self._file[image_id]
        return CamRecord(keys=g["keys"][()].astype(np.int64), cam=g["cam"][()],
                         high_res=g["high_res"][()])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CamStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_record(f: h5py.File, image_id: str, rec: CamRecord) -> None:
    if image_id in f:
        del f[image_id]
    g = f.create_group(image_id)
    g.create_dataset("keys", data=rec.keys.astype(np.int16))
    for name in ("cam", "high_res"):
        arr = rec.__dict__[name].astype(np.float16)
        chunks = (1, *arr.shape[1:]) if arr.shape[0] else None
        g.create_dataset(name, data=arr, chunks=chunks, compression="gzip" if chunks else None,
                         compression_opts=1 if chunks else None, shuffle=bool(chunks))
    g.attrs["done"] = True  # written last: a group without it is incomplete


# Kept free beyond a record's own bytes: HDF5's metadata and the close. A write that
# hits a full disk inside HDF5 can leave the library in a state where closing the file
# crashes the process (SIGSEGV), so the space is checked before each record instead.
SPACE_MARGIN = 4 << 20


def _ensure_space(path: Path, rec: CamRecord) -> None:
    need = 2 * (rec.cam.size + rec.high_res.size) + rec.keys.size * 2 + SPACE_MARGIN  # float16
    if shutil.disk_usage(path.parent).free < need:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))


def write_cams(out_path: str | os.PathLike, records: Iterator[tuple[str, CamRecord]],
               total: int, attrs: Mapping[str, Any], skip: set[str] | None = None) -> None:
    """Stream records into ``out_path`` through ``<out_path>.partial`` (see module doc)."""
    out_path = Path(out_path)
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        with h5py.File(partial, "a") as f:
            for k, v in attrs.items():
                f.attrs[k] = v
            with tqdm(total=total, initial=len(skip or ()), desc=f"CAM {out_path.name}",
                      unit="img", **tqdm_kwargs()) as bar:
                for image_id, rec in records:
                    _ensure_space(partial, rec)
                    _write_record(f, image_id, rec)
                    # Flushed per image (milliseconds, next to seconds of network work): a
                    # kill -9 then loses at most the image being written.
                    f.flush()
                    bar.update()
    except Exception as err:
        # h5py reports a full disk as a generic write failure; name the file instead. The
        # partial keeps only groups marked done, so a rerun trusts nothing half-written.
        if no_space_path(err) is not None:
            raise OSError(errno.ENOSPC, "No space left on device", str(partial)) from err
        raise
    os.replace(partial, out_path)


def done_ids(partial: Path, inputs: Mapping[str, Any] | None = None) -> set[str]:
    """Ids fully written to a partial CAM file made from ``inputs`` (see :func:`cam_inputs`).

    A corrupt partial, or one whose stored ``inputs`` fingerprint differs (another
    checkpoint, dataset or params), is discarded. ``inputs`` None skips that check
    (reading what an interrupted run left, not resuming it).
    """
    if not partial.is_file():
        return set()
    try:
        with h5py.File(partial, "a") as f:
            stored = f.attrs.get("inputs")
            if inputs is None or resumable(None if stored is None else str(stored), inputs,
                                           "CAM extraction", partial):
                for k in [k for k in f if not f[k].attrs.get("done", False)]:
                    del f[k]
                return set(f.keys())
    except OSError as err:
        log.warning("discarding unreadable partial CAM file %s (%s)", partial, err)
    partial.unlink()
    return set()


def cam_file_identity(path: str | os.PathLike) -> str:
    """What a complete CAM file was made from (its ``inputs`` attribute), for the resume
    fingerprints of what reads it; hashing a CAM file's bytes (tens of GB on COCO) would
    cost minutes. Files without the attribute fall back to that hash."""
    with CamStore(path) as store:
        stored = store.attrs.get("inputs")
    if stored is not None:
        return hashlib.sha1(str(stored).encode()).hexdigest()
    return file_digest(path)


def cam_inputs(net: ESOLNet, info: DatasetInfo, split: str, scales: Sequence[float], flip: bool,
               amp: torch.dtype | None, attrs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a CAM file's content depends on: weights, the split's images and labels, params.

    Stored in the file as ``inputs`` (:func:`esol.engine.fingerprint`), compared on resume.
    """
    labels = info.labels.get(split, {})
    data = json.dumps({"root": str(info.root), "manifest": info.manifest,
                       "ids": info.ids(split), "labels": labels}, sort_keys=True)
    return {"weights": weights_digest(net), "dataset": hashlib.sha1(data.encode()).hexdigest(),
            "split": split, "scales": [float(s) for s in scales], "flip": bool(flip),
            "amp": str(amp), "attrs": dict(attrs or {})}


def make_cams(net: ESOLNet, info: DatasetInfo, split: str, out_path: str | os.PathLike,
              scales: Sequence[float], flip: bool, device: torch.device,
              attrs: Mapping[str, Any] | None = None, amp: torch.dtype | None = None,
              shard: tuple[int, int] = (0, 1)) -> int:
    """Compute and store CAMs for every image of ``split`` (keys from its image labels).

    ``shard`` ``(k, n)`` restricts the file to :func:`shard_ids` ``k`` of ``n``;
    :func:`gather_cams` joins the ``n`` files into the one an unsharded run writes.
    """
    if split not in info.labels:
        raise DatasetError(f"split {split!r} has no masks, so no image labels to choose CAM classes")
    labels = info.labels[split]
    ids = shard_ids(info.ids(split), *shard)
    out_path = Path(out_path)
    net = net.to(device).eval()
    inputs = cam_inputs(net, info, split, scales, flip, amp, attrs)
    skip = done_ids(out_path.with_name(out_path.name + ".partial"), inputs)
    if skip:
        log.info("resuming CAM extraction: %d of %d images already done", len(skip), len(ids))
    stage = getattr(getattr(net, "arch", None), "stage", "network")
    source = str((attrs or {}).get("checkpoint", "the network given"))

    def records() -> Iterator[tuple[str, CamRecord]]:
        for image_id in ids:
            if image_id in skip:
                continue
            image = read_image(info.layout.image(image_id))
            keys = np.asarray(labels[image_id], dtype=np.int64)
            strided, high = multiscale_cam(net, image, scales, flip, device, amp)
            rec = CamRecord(keys=keys, cam=normalize_cam(strided, keys).cpu().numpy(),
                            high_res=normalize_cam(high, keys).cpu().numpy())
            for name in ("cam", "high_res"):
                check_finite_map(getattr(rec, name), f"CAM ({name}) of image {image_id!r}", stage,
                                 source)
            yield image_id, rec

    meta = {"scales": list(scales), "flip": flip, "split": split, "classes": info.classes,
            **(attrs or {}), "inputs": fingerprint(inputs)}
    write_cams(out_path, records(), total=len(ids), attrs=meta, skip=skip)
    return len(ids)


def gather_cams(shard_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike,
                ids: Sequence[str] | None = None) -> int:
    """Join shard files of one (method, split) into ``out_path``, group by group.

    Datasets are copied as stored (no decompression), in the order of ``ids`` (the
    split's order, as an unsharded run writes it) when given. The shards must agree on
    every file attribute (same checkpoint, scales, flip) and hold each id once.
    """
    out_path = Path(out_path)
    partial = out_path.with_name(out_path.name + ".partial")
    partial.unlink(missing_ok=True)
    sources = [h5py.File(p, "r") for p in shard_paths]
    try:
        where: dict[str, h5py.File] = {}
        for f in sources:
            if set(f.attrs) != set(sources[0].attrs) or any(
                    np.any(np.asarray(f.attrs[k]) != np.asarray(sources[0].attrs[k]))
                    for k in f.attrs):
                raise DatasetError(f"CAM shards {shard_paths[0]} and {f.filename} were made with "
                                   "different settings (file attributes differ)")
            for image_id in f:
                if image_id in where:
                    raise DatasetError(f"image {image_id!r} is in two CAM shards: "
                                       f"{where[image_id].filename} and {f.filename}")
                where[image_id] = f
        order = list(ids) if ids is not None else sorted(where)
        missing = [i for i in order if i not in where]
        if missing:
            raise DatasetError(f"CAM shards of {out_path.name} lack {len(missing)} images, "
                               f"first {missing[0]!r}")
        with h5py.File(partial, "w") as out:
            for k, v in sources[0].attrs.items():
                out.attrs[k] = v
            for image_id in order:
                where[image_id].copy(where[image_id][image_id], out, name=image_id)
    finally:
        for f in sources:
            f.close()
    os.replace(partial, out_path)
    return len(order)
