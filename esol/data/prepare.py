"""From the ``dataset`` config section to a validated :class:`DatasetInfo`.

Sources (``dataset.source``):

* ``synthetic``: the embedded dataset, generated under ``results/<name>/synthetic``;
* ``voc``: a VOC-layout folder (``dataset.root``), e.g. ``VOCdevkit/VOC2012``. Its
  ``train_aug`` split comes from, in this order: SBD converted by rule ``convert_sbd``
  when ``dataset.sbd_root`` is set; the folder's own ``ImageSets/Segmentation/
  train_aug.txt``; else the ids of its ``SegmentationClassAug/`` minus ``val``;
* ``coco``: MS COCO converted by rule ``convert_coco`` into a VOC layout.

Converted files live in :func:`converted_root` (``results/<name>/converted`` unless
``dataset.converted_root`` says otherwise), never in the user's dataset.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from esol.data import synthetic
from esol.data.coco import read_manifest
from esol.data.convert import missing_report
from esol.data.voc import (AUG_MASK_DIR, IMAGE_DIR, MASK_DIR, SPLIT_DIR, VOC_CLASSES, DatasetInfo,
                           VOCLayout, prepare_dataset, read_split)
from esol.data.voc_aug import train_aug_from_aug_folder
from esol.utils import ConfigError, DatasetError

log = logging.getLogger(__name__)

COCO_MANIFEST = "coco.json"
SBD_MANIFEST = "sbd.json"


def converted_root(cfg: Mapping[str, Any]) -> Path:
    """Where conversions write: ``dataset.converted_root``, else ``results/<name>/converted``."""
    d = cfg["dataset"]
    if d.get("converted_root"):
        return Path(d["converted_root"]).expanduser()
    return Path("results") / d["name"] / "converted"


def dataset_root(cfg: Mapping[str, Any]) -> Path:
    """Where the dataset lives: generated under results/, ``dataset.root``, or converted."""
    d = cfg["dataset"]
    if d["source"] == "synthetic":
        return Path("results") / d["name"] / "synthetic"
    if d["source"] == "coco":
        return converted_root(cfg)
    if not d.get("root"):
        raise ConfigError("dataset.root must name the VOC-layout folder when dataset.source is 'voc'")
    return Path(d["root"]).expanduser()


def aug_root(cfg: Mapping[str, Any]) -> Path | None:
    """The converted overlay folder read before ``dataset.root`` (VOC with SBD), or None."""
    d = cfg["dataset"]
    return converted_root(cfg) if d["source"] == "voc" and d.get("sbd_root") else None


def dataset_classes(cfg: Mapping[str, Any]) -> list[str]:
    """Names of mask values 1..K: the generator's, COCO's (from the conversion), or config's."""
    d = cfg["dataset"]
    if d["source"] == "synthetic":
        return synthetic.class_names(d["synthetic"]["num_classes"])
    if d["source"] == "coco":
        names = read_manifest(converted_root(cfg) / COCO_MANIFEST)["classes"]
        if d.get("classes") and list(d["classes"]) != names:
            raise ConfigError("dataset.classes differs from the categories of the COCO annotation "
                              "files; leave it out for COCO (names come from the annotations)")
        return names
    return list(d.get("classes") or VOC_CLASSES)


def _split_ids(cfg: Mapping[str, Any], root: Path, overlay: Path | None) -> dict[str, list[str]]:
    """The ids of every configured split; train_aug derived when the folder has no list."""
    d = cfg["dataset"]
    ids: dict[str, list[str]] = {}
    for split in [*d["splits"], *d.get("test_splits", [])]:
        if VOCLayout(root, overlay).split_list(split).is_file():
            ids[split] = read_split(root, split, overlay)
        elif split == "train_aug" and d["source"] == "voc" and (root / AUG_MASK_DIR).is_dir():
            val = read_split(root, "val", overlay)
            ids[split] = train_aug_from_aug_folder(root, val)
            log.info("train_aug: no list in %s; %d ids = %s minus the %d val ids", root / SPLIT_DIR,
                     len(ids[split]), root / AUG_MASK_DIR, len(val))
        elif split == "train_aug" and d["source"] == "voc":
            raise DatasetError(
                f"no train_aug list: {root / SPLIT_DIR / 'train_aug.txt'} does not exist and "
                f"{root} has no {AUG_MASK_DIR}/ folder. Set dataset.sbd_root to SBD's "
                "benchmark_RELEASE folder to build train_aug (10582 images) from it, or put "
                f"{AUG_MASK_DIR}/ (or the list) into {root}")
        else:
            ids[split] = read_split(root, split, overlay)  # raises, naming the missing list
    return ids


def check_inventory(layout: VOCLayout, ids: Mapping[str, Sequence[str]],
                    mask_splits: Sequence[str], expected: Mapping[str, int]) -> None:
    """Check every split against its expected size and every listed file, by folder.

    One :class:`DatasetError` lists every problem at once: a split whose list has another
    size than ``expected`` (``dataset.expected_counts``), and per folder
    (``JPEGImages/``, the mask folders) how many listed files are missing, with examples.
    A folder that does not exist at all is named as such.
    """
    problems: list[str] = []
    for split, n in expected.items():
        if split in ids and len(ids[split]) != n:
            problems.append(f"{layout.split_list(split)}: {len(ids[split])} ids, expected {n} "
                            f"(dataset.expected_counts.{split})")

    def names(folder: Path, suffix: str) -> set[str] | None:
        if not folder.is_dir():
            return None
        return {e.name[: -len(suffix)] for e in os.scandir(folder) if e.name.endswith(suffix)}

    images = names(layout.root / IMAGE_DIR, ".jpg")
    mask_dirs = [layout.root / MASK_DIR, layout.root / AUG_MASK_DIR]
    if layout.aug_root is not None:
        mask_dirs.append(layout.aug_root / AUG_MASK_DIR)
    masks = [names(f, ".png") for f in mask_dirs]
    if images is None:
        problems.append(f"{layout.root / IMAGE_DIR}/: folder not found")
    if any(ids.get(s) for s in mask_splits) and all(m is None for m in masks):
        problems.append(f"no mask folder: none of {', '.join(f'{f}/' for f in mask_dirs)} exists")
    for split, split_ids in ids.items():
        if images is not None:
            missing = [f"{i}.jpg" for i in split_ids if i not in images]
            if missing:
                problems.append(missing_report(layout.root / IMAGE_DIR, f"{split} images",
                                               missing, len(split_ids)))
        if split in mask_splits and any(m is not None for m in masks):
            have = set().union(*(m for m in masks if m is not None))
            missing = [f"{i}.png" for i in split_ids if i not in have]
            if missing:
                where = " or ".join(str(f) for f, m in zip(mask_dirs, masks, strict=True)
                                    if m is not None)
                problems.append(missing_report(where, f"{split} masks", missing, len(split_ids)))
    if problems:
        raise DatasetError(f"dataset {layout.root} is incomplete:\n  " + "\n  ".join(problems))


def prepare_from_config(cfg: Mapping[str, Any], workers: int = 1,
                        root: str | Path | None = None) -> DatasetInfo:
    """Validate the configured dataset and derive its labels (rule ``prepare_data``)."""
    d = cfg["dataset"]
    for key in ("train_split", "seed_split"):
        if d[key] not in d["splits"]:
            raise ConfigError(f"dataset.{key} is {d[key]!r}, which is not in dataset.splits "
                              f"{d['splits']}")
    root = Path(root or dataset_root(cfg)).expanduser()
    if not root.is_dir():
        key = "dataset.root" if d["source"] == "voc" else "the conversion rule's output"
        raise DatasetError(f"dataset root not found: {root} ({key})")
    overlay = aug_root(cfg)
    ids = _split_ids(cfg, root, overlay)
    expected = d.get("expected_counts") or {}
    check_inventory(VOCLayout(root, overlay), ids, d["splits"],
                    {s: int(n) for s, n in expected.items() if s in ids})
    info = prepare_dataset(root, dataset_classes(cfg), d["splits"], d.get("test_splits", []),
                           workers=workers, aug_root=overlay, split_ids=ids)
    check_has_objects(info, d["train_split"])
    return info


def check_has_objects(info: DatasetInfo, split: str) -> None:
    """Refuse a training split whose masks hold no object class at all: the classifier
    would have no image label to learn from (and later stages no object to localise)."""
    labels = info.labels.get(split, {})
    if labels and not any(labels.values()):
        raise DatasetError(
            f"dataset.train_split {split!r}: none of its {len(labels)} masks holds a labelled "
            f"object (every pixel is background 0 or ignore 255), so there is nothing to learn; "
            f"check the masks under {info.root} and dataset.classes")
