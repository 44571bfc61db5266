"""PASCAL VOC 2012 with SBD: the augmented training set ``train_aug`` (10582 images).

The papers the project follows (ESOL 4.1, IRN, DeepLab) train on VOC 2012 ``train``
plus the Semantic Boundaries Dataset (SBD, Hariharan et al. ICCV'11) ``train`` and
``val``, minus VOC ``val``: 1464 + 8498 + 2857 ids, 10582 once duplicates and VOC val
are taken out. SBD ships its masks as MATLAB files, ``dataset/cls/<id>.mat``, each a
struct ``GTcls`` with fields ``Segmentation`` (uint8, 0 = background, 1..20 = VOC
classes), ``Boundaries`` and ``CategoriesPresent``.

Masks: as DeepLab's recipe builds ``SegmentationClassAug`` (SBD masks converted, then
VOC's own ``SegmentationClass`` copied over them), VOC's annotation wins where both
exist. Only SBD masks for ids without a VOC mask are converted, into
``<converted>/SegmentationClassAug/``; the loader (:class:`esol.data.voc.VOCLayout`)
falls back to ``SegmentationClass`` for the others. Nothing is written into the VOC or
SBD folders.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from esol.data.convert import (is_fresh, missing_report, require_dir, worker_pool,
                               write_lines)
from esol.data.voc import AUG_MASK_DIR, MASK_DIR, SPLIT_DIR, read_split, write_label
from esol.utils import DatasetError

log = logging.getLogger(__name__)

# The published sizes (ESOL 4.1; the VOC 2012 and SBD releases).
VOC12_COUNTS: dict[str, int] = {"train": 1464, "val": 1449, "train_aug": 10582, "test": 1456}
SBD_COUNTS: dict[str, int] = {"train": 8498, "val": 2857}


def train_aug_ids(voc_train: Iterable[str], voc_val: Iterable[str], sbd_train: Iterable[str],
                  sbd_val: Iterable[str]) -> list[str]:
    """The standard train_aug list: (VOC train | SBD train | SBD val) - VOC val, sorted."""
    return sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))


def train_aug_from_aug_folder(root: str | os.PathLike, voc_val: Iterable[str]) -> list[str]:
    """train_aug from a downloaded ``SegmentationClassAug`` folder without its list.

    The widely shared folder (DeepLab's) holds the 10582 train_aug masks and the 1449
    VOC val masks, nothing else; its ids minus VOC val are train_aug.
    """
    folder = Path(root) / AUG_MASK_DIR
    if not folder.is_dir():
        raise DatasetError(f"{folder} not found")
    ids = (e.name[:-4] for e in os.scandir(folder) if e.name.endswith(".png"))
    return sorted(set(ids) - set(voc_val))


def sbd_dataset_dir(sbd_root: str | os.PathLike) -> Path:
    """SBD's ``dataset/`` folder, given it or the ``benchmark_RELEASE`` folder above it."""
    root = Path(sbd_root).expanduser()
    for candidate in (root, root / "dataset"):
        if (candidate / "cls").is_dir():
            return candidate
    raise DatasetError(
        f"SBD folder not found: neither {root / 'cls'} nor {root / 'dataset' / 'cls'} exists "
        "(config key dataset.sbd_root: SBD's benchmark_RELEASE folder, or its dataset/ "
        "folder holding cls/, train.txt and val.txt)")


def read_sbd_list(sbd_dir: Path, split: str) -> list[str]:
    path = sbd_dir / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"SBD split list not found: {path} (config key dataset.sbd_root)")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def read_sbd_mask(path: str | os.PathLike) -> np.ndarray:
    """``GTcls.Segmentation`` of one SBD ``cls/<id>.mat`` file, (H, W) uint8."""
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except FileNotFoundError:
        raise DatasetError(f"SBD mask not found: {path}") from None
    except (OSError, ValueError, TypeError, NotImplementedError) as err:
        raise DatasetError(f"unreadable SBD mask {path}: {err}") from None
    gt = mat.get("GTcls")
    seg = getattr(gt, "Segmentation", None)
    if seg is None:
        raise DatasetError(f"SBD mask {path} has no GTcls.Segmentation (is it from dataset/cls/?)")
    seg = np.asarray(seg)
    if seg.ndim != 2 or seg.size == 0 or seg.min() < 0 or seg.max() > 255:
        raise DatasetError(f"SBD mask {path}: GTcls.Segmentation is not a 2-D label map "
                           f"(shape {seg.shape})")
    return seg.astype(np.uint8)


def _convert_one(job: tuple[str, str]) -> bool:
    """Convert one SBD mask to a VOC-palette PNG; False when an up-to-date one exists."""
    src, dst = job
    if is_fresh(dst, [src]):
        return False
    write_label(dst, read_sbd_mask(src))
    return True


def convert_sbd(voc_root: str | os.PathLike, sbd_root: str | os.PathLike,
                out_root: str | os.PathLike, workers: int = 1) -> dict[str, Any]:
    """Build train_aug from VOC 2012 and SBD into ``out_root`` (a VOC-layout overlay).

    Writes ``out_root/SegmentationClassAug/<id>.png`` for the train_aug ids VOC has no
    mask for (from SBD's ``cls/<id>.mat``) and ``out_root/ImageSets/Segmentation/
    train_aug.txt``; returns a summary (the rule's manifest). Resumable: masks newer
    than their ``.mat`` are kept. Missing inputs are reported by folder, all at once.
    """
    voc_root = require_dir(voc_root, "VOC 2012 (VOCdevkit/VOC2012)", "dataset.root")
    sbd_dir = sbd_dataset_dir(sbd_root)
    out_root = Path(out_root)
    voc_train, voc_val = read_split(voc_root, "train"), read_split(voc_root, "val")
    sbd_train, sbd_val = read_sbd_list(sbd_dir, "train"), read_sbd_list(sbd_dir, "val")
    ids = train_aug_ids(voc_train, voc_val, sbd_train, sbd_val)
    sbd_ids = set(sbd_train) | set(sbd_val)
    voc_masks = {e.name[:-4] for e in os.scandir(voc_root / MASK_DIR)
                 if e.name.endswith(".png")} if (voc_root / MASK_DIR).is_dir() else set()
    sbd_mats = {e.name[:-4] for e in os.scandir(sbd_dir / "cls") if e.name.endswith(".mat")}
    from_voc = [i for i in ids if i in voc_masks]
    from_sbd = [i for i in ids if i not in voc_masks and i in sbd_ids]
    problems = []
    no_mat = [i for i in from_sbd if i not in sbd_mats]
    if no_mat:
        problems.append(missing_report(sbd_dir / "cls", "SBD masks (<id>.mat) of train_aug ids",
                                       [f"{i}.mat" for i in no_mat], len(from_sbd)))
    no_voc = [i for i in ids if i not in voc_masks and i not in sbd_ids]
    if no_voc:
        problems.append(missing_report(voc_root / MASK_DIR, "masks of VOC train ids not in SBD",
                                       [f"{i}.png" for i in no_voc], len(ids) - len(from_sbd)))
    if problems:
        raise DatasetError("cannot build train_aug from VOC 2012 and SBD:\n  " + "\n  ".join(problems))
    log.info("train_aug: %d ids = (VOC train %d | SBD train %d | SBD val %d) - VOC val %d; "
             "masks: %d from VOC SegmentationClass, %d converted from SBD",
             len(ids), len(voc_train), len(sbd_train), len(sbd_val), len(voc_val),
             len(from_voc), len(from_sbd))
    published = {"VOC train": (voc_train, VOC12_COUNTS["train"]),
                 "VOC val": (voc_val, VOC12_COUNTS["val"]),
                 "SBD train": (sbd_train, SBD_COUNTS["train"]), "SBD val": (sbd_val, SBD_COUNTS["val"])}
    for name, (listed, n) in published.items():
        if len(listed) != n:
            log.warning("%s lists %d ids; the published release has %d", name, len(listed), n)
    jobs = [(str(sbd_dir / "cls" / f"{i}.mat"), str(out_root / AUG_MASK_DIR / f"{i}.png"))
            for i in from_sbd]
    with worker_pool(workers) as imap:
        converted = sum(imap(_convert_one, jobs, len(jobs), "SBD masks"))
    write_lines(out_root / SPLIT_DIR / "train_aug.txt", ids)
    log.info("SBD: %d masks converted, %d up to date already", converted, len(jobs) - converted)
    return {"train_aug": len(ids), "masks_from_voc": len(from_voc), "masks_from_sbd": len(from_sbd),
            "converted": converted, "up_to_date": len(jobs) - converted,
            "lists": {"voc_train": len(voc_train), "voc_val": len(voc_val),
                      "sbd_train": len(sbd_train), "sbd_val": len(sbd_val)},
            "voc_root": str(voc_root.resolve()), "sbd_root": str(sbd_dir.resolve()),
            "out_root": str(out_root.resolve())}

