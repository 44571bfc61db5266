"""Saliency maps and saliency-combined pseudo masks (the paper's Table 4, rows "with S").

Saliency maps are grey PNGs, one ``<id>.png`` per image, 0-255 (255 most salient): a
user's folder (e.g. PoolNet or DSS maps of VOC), or made here by a classical detector
with no weights, OpenCV's fine-grained static saliency (Montabone & Soto, Image and
Vision Computing 2010; ``cv2.saliency.StaticSaliencyFineGrained``, opencv-contrib),
rescaled per image to 0-255.

The combination is the one of clovaai/WSSS-BED, ``wsss_bed/run.py`` (the benchmark that
re-ran the saliency-guided WSSS methods with one rule), read on a finished pseudo mask.
With ``s`` the map divided by 255 and ``tau`` its threshold (config
``saliency.threshold``; WSSS-BED's ``sal_thresh`` 0.2), run.py binarises ``s > tau``,
gives background the score ``1 - binary`` against class scores in [0, 1] (so a
non-salient pixel is background), and with ``ignore_label`` sets salient pixels left
as background to 255. On a label map, pixel by pixel:

* ``s <= tau``: background (0), whatever the mask says;
* ``s > tau`` and the mask says background: ignore (255);
* ``s > tau`` otherwise: the mask's label (a class, or the mask's own 255).

No ground truth reaches it: the threshold is a config value and the inputs are the
pseudo mask and the image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from esol.data.voc import DatasetInfo, read_image, read_label, write_label
from esol.engine import file_digest
from esol.labeldir import LabelDir, dir_digest, parallel_map
from esol.utils import ConfigError, DatasetError, atomic_path

log = logging.getLogger(__name__)

IGNORE = 255
# A label source <method>-sal is that method's masks with saliency (method names hold no
# hyphen); workflow/rules/common.smk names the sources the same way.
SOURCE_SUFFIX = "-sal"


def combine(mask: np.ndarray, saliency: np.ndarray, threshold: float) -> np.ndarray:
    """A pseudo mask combined with a saliency map (module doc): (H, W) uint8 both."""
    if mask.shape != saliency.shape:
        raise DatasetError(f"saliency map {saliency.shape} and pseudo mask {mask.shape} differ in size")
    salient = saliency.astype(np.float32) / 255.0 > threshold
    out = mask.astype(np.uint8, copy=True)
    out[salient & (mask == 0)] = IGNORE
    out[~salient] = 0
    return out


def classical_saliency(image: np.ndarray) -> np.ndarray:
    """Fine-grained static saliency of an RGB image, rescaled to 0-255 (uint8)."""
    try:
        import cv2
        detector = cv2.saliency.StaticSaliencyFineGrained_create()
    except AttributeError:
        raise ConfigError("saliency.source classical needs OpenCV's contrib modules "
                          "(pip install opencv-contrib-python-headless in place of "
                          "opencv-python-headless)") from None
    ok, sal = detector.computeSaliency(np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise DatasetError("OpenCV's fine-grained saliency failed on an image")
    sal = np.asarray(sal, dtype=np.float32)
    lo, hi = float(sal.min()), float(sal.max())
    scaled = (sal - lo) / (hi - lo) if hi > lo else np.zeros_like(sal)
    return np.round(scaled * 255.0).astype(np.uint8)


def read_saliency(path: str | os.PathLike) -> np.ndarray:
    """A saliency PNG as (H, W) uint8 (RGB maps are converted to grey)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise DatasetError(f"saliency map not found: {path}") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"unreadable saliency map {path}: {err}") from None


def check_saliency_dir(folder: str | os.PathLike, ids: Sequence[str]) -> Path:
    """``folder`` holding ``<id>.png`` for every id, or one error naming the first missing."""
    folder = Path(os.path.expanduser(folder))
    if not folder.is_dir():
        raise DatasetError(f"saliency maps: {folder} (config saliency.source) is not a folder")
    missing = [i for i in ids if not (folder / f"{i}.png").is_file()]
    if missing:
        raise DatasetError(f"saliency maps: {len(missing)} of {len(ids)} images have no map in "
                           f"{folder}, first {folder / (missing[0] + '.png')}")
    return folder


# -- rule saliency_maps --------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_saliency(dataset_json: str, out_dir: str) -> None:
    _WORKER.clear()
    _WORKER.update(info=DatasetInfo.from_json(dataset_json), out=Path(out_dir))


def _saliency_one(image_id: str) -> str:
    sal = classical_saliency(read_image(_WORKER["info"].layout.image(image_id)))
    with atomic_path(_WORKER["out"] / f"{image_id}.png", suffix=".png") as tmp:
        Image.fromarray(sal).save(tmp, format="PNG")
    return image_id


def make_saliency_maps(dataset_json: str | os.PathLike, split: str, out_dir: str | os.PathLike,
                       threads: int = 1) -> int:
    """Rule ``saliency_maps``: the classical detector's map of every image of ``split``,
    as grey PNGs in ``out_dir`` (written whole or not at all, :class:`LabelDir`)."""
    info = DatasetInfo.from_json(dataset_json)
    ids = info.ids(split)
    target = LabelDir(out_dir, {"kind": "saliency", "detector": "StaticSaliencyFineGrained",
                                "ids": ids, "dataset": file_digest(dataset_json)})
    for _ in parallel_map(_saliency_one, target.todo(ids), threads, "saliency",
                          initializer=_init_saliency, initargs=(str(dataset_json), str(target.partial))):
        pass
    target.finish()
    return len(ids)


# -- rule saliency_masks -------------------------------------------------------------------

def _init_combine(masks: str, saliency: str, out_dir: str, threshold: float) -> None:
    _WORKER.clear()
    _WORKER.update(masks=Path(masks), saliency=Path(saliency), out=Path(out_dir), threshold=threshold)


def _combine_one(image_id: str) -> str:
    w = _WORKER
    mask = read_label(w["masks"] / f"{image_id}.png")
    sal_path = w["saliency"] / f"{image_id}.png"
    sal = read_saliency(sal_path)
    if sal.shape != mask.shape:
        raise DatasetError(f"saliency map {sal_path} is {sal.shape} but the pseudo mask of "
                           f"{image_id!r} is {mask.shape}")
    write_label(w["out"] / f"{image_id}.png", combine(mask, sal, w["threshold"]))
    return image_id


def make_saliency_masks(dataset_json: str | os.PathLike, split: str, masks_dir: str | os.PathLike,
                        saliency_dir: str | os.PathLike, threshold: float,
                        out_dir: str | os.PathLike, threads: int = 1) -> dict[str, float]:
    """Rule ``saliency_masks``: every pseudo mask of ``split`` combined with its saliency
    map (module doc), as palette PNGs. Returns the shares of pixels the combination made
    background and ignore, over the split (logged: a threshold that ignores most pixels
    shows here first)."""
    if not 0.0 <= threshold < 1.0:
        raise ConfigError(f"config key saliency.threshold is {threshold}; it must be in [0, 1)")
    info = DatasetInfo.from_json(dataset_json)
    ids = info.ids(split)
    saliency_dir = check_saliency_dir(saliency_dir, ids)
    target = LabelDir(out_dir, {"kind": "saliency_masks", "threshold": threshold, "ids": ids,
                                "masks": dir_digest(masks_dir), "saliency": dir_digest(saliency_dir)})
    log.info("pseudo masks of %s with saliency above %.2f: %d images, %d processes", split,
             threshold, len(ids), threads)
    for _ in parallel_map(_combine_one, target.todo(ids), threads, "saliency masks",
                          initializer=_init_combine,
                          initargs=(str(masks_dir), str(saliency_dir), str(target.partial), threshold)):
        pass
    target.finish()
    counts = np.zeros(3, dtype=np.int64)  # pixels, background, ignore
    for image_id in ids:
        label = read_label(Path(out_dir) / f"{image_id}.png")
        counts += [label.size, int((label == 0).sum()), int((label == IGNORE).sum())]
    shares = {"background": counts[1] / counts[0], "ignore": counts[2] / counts[0]}
    log.info("combined masks: %.1f%% background, %.1f%% ignore", 100 * shares["background"],
             100 * shares["ignore"])
    return shares
