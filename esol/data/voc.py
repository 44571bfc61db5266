"""The VOC directory layout: reading, writing and validating it, and image-level labels.

One layout serves every dataset (the embedded synthetic one, PASCAL VOC 2012, a user's
own): ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG, 255 on
object borders), ``SegmentationClassAug/<id>.png`` (no borders) and
``ImageSets/Segmentation/<split>.txt``. Mask value 0 is background, ``c`` in
``1..K`` is ``classes[c-1]``, 255 is ignored.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from esol.utils import DatasetError, atomic_path

log = logging.getLogger(__name__)

IGNORE = 255

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

IMAGE_DIR = "JPEGImages"
MASK_DIR = "SegmentationClass"
AUG_MASK_DIR = "SegmentationClassAug"
SPLIT_DIR = Path("ImageSets") / "Segmentation"


def voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map, shape (256, 3) uint8 (bit-interleaved class index)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


_PALETTE = voc_palette().flatten().tolist()


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to an RGB uint8 array (H, W, 3); a bad file names itself."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path}") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"unreadable image {path}: {err}") from None


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a label map (palette or grey PNG) as its raw indices, (H, W) uint8."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DatasetError(
                    f"label map {path} has mode {im.mode}; expected a palette (P) or grey (L) PNG "
                    "whose values are class indices")
            return np.asarray(im)
    except FileNotFoundError:
        raise DatasetError(f"label file not found: {path}") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"unreadable label map {path}: {err}") from None


def label_image(label: np.ndarray) -> Image.Image:
    """A (H, W) uint8 label map as a VOC-palette PIL image."""
    im = Image.fromarray(np.asarray(label, dtype=np.uint8), mode="P")
    im.putpalette(_PALETTE)
    return im


def write_label(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write a label map as a VOC-palette PNG, atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        label_image(label).save(tmp, format="PNG")


def read_split(root: str | os.PathLike, split: str, aug_root: str | os.PathLike | None = None
               ) -> list[str]:
    """The image ids listed in ``ImageSets/Segmentation/<split>.txt``.

    A list under ``aug_root`` (lists built by a conversion step, e.g. SBD's train_aug)
    takes precedence over the one under ``root``.
    """
    path = VOCLayout(Path(root), Path(aug_root) if aug_root else None).split_list(split)
    if not path.is_file():
        raise DatasetError(f"split list not found: {path}")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"split list {path} is empty")
    return ids


def write_split(root: str | os.PathLike, split: str, ids: Sequence[str]) -> None:
    path = Path(root) / SPLIT_DIR / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


@dataclass(frozen=True)
class VOCLayout:
    """Paths of one dataset in the VOC layout.

    ``aug_root``, when set, is a second VOC-layout folder written by a conversion step
    (under ``results/``, never inside the user's dataset): its ``SegmentationClassAug/``
    masks and ``ImageSets/Segmentation/`` lists are looked up before ``root``'s.
    """

    root: Path
    aug_root: Path | None = None

    def image(self, image_id: str) -> Path:
        return self.root / IMAGE_DIR / f"{image_id}.jpg"

    def mask(self, image_id: str) -> Path:
        """Evaluation ground truth (with 255 borders)."""
        return self.root / MASK_DIR / f"{image_id}.png"

    def aug_mask(self, image_id: str) -> Path:
        if self.aug_root is not None:
            converted = self.aug_root / AUG_MASK_DIR / f"{image_id}.png"
            if converted.is_file():
                return converted
        return self.root / AUG_MASK_DIR / f"{image_id}.png"

    def split_list(self, split: str) -> Path:
        if self.aug_root is not None:
            converted = self.aug_root / SPLIT_DIR / f"{split}.txt"
            if converted.is_file():
                return converted
        return self.root / SPLIT_DIR / f"{split}.txt"

    def label_source(self, image_id: str) -> Path | None:
        """The mask image-level labels come from: Aug first (as IRN's cls_labels), else GT."""
        for p in (self.aug_mask(image_id), self.mask(image_id)):
            if p.is_file():
                return p
        return None

    def gt_mask(self, image_id: str) -> Path | None:
        """The mask evaluation uses: SegmentationClass first, else the Aug one."""
        for p in (self.mask(image_id), self.aug_mask(image_id)):
            if p.is_file():
                return p
        return None


@dataclass
class DatasetInfo:
    """What ``prepare_dataset`` derives once: ids and image-level labels per split.

    ``labels[split][id]`` lists the mask values (1..K) present in the image; a split
    without masks (a test split) has no ``labels`` entry.
    """

    root: Path
    classes: list[str]
    splits: dict[str, list[str]]
    labels: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    aug_root: Path | None = None
    # Digest of the image and mask files' names, sizes and mtimes when prepared (rule
    # prepare_data's manifest param), or None: it makes dataset.json, and the resume
    # fingerprints of what reads it, change when the files change.
    manifest: str | None = None
    # (height, width) of each split's largest image by area: what a rule's memory must
    # hold (resources.smk reads it when the job starts).
    largest: dict[str, list[int]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def layout(self) -> VOCLayout:
        return VOCLayout(self.root, self.aug_root)

    def ids(self, split: str) -> list[str]:
        if split not in self.splits:
            raise DatasetError(f"split {split!r} is not in the prepared dataset "
                               f"(it has {sorted(self.splits)})")
        return self.splits[split]

    def labelled_ids(self, split: str) -> list[str]:
        """Ids with at least one object class: the ones a classifier can train on."""
        labels = self.labels.get(split)
        if labels is None:
            raise DatasetError(f"split {split!r} has no masks, so no image-level labels")
        return [i for i in self.ids(split) if labels[i]]

    def label_vector(self, split: str, image_id: str) -> np.ndarray:
        """Multi-hot (K,) float32 vector, as IRN's cls_labels."""
        vec = np.zeros(self.num_classes, dtype=np.float32)
        vec[np.asarray(self.labels[split][image_id], dtype=np.int64) - 1] = 1.0
        return vec

    def to_json(self, path: str | os.PathLike) -> None:
        data = {"root": str(self.root), "classes": self.classes, "splits": self.splits,
                "labels": self.labels,
                "aug_root": str(self.aug_root) if self.aug_root is not None else None,
                "manifest": self.manifest, "largest": self.largest}
        with atomic_path(path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(data, indent=1))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> DatasetInfo:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise DatasetError(f"cannot read prepared dataset {path}: {err}") from None
        aug_root = data.get("aug_root")
        return cls(root=Path(data["root"]), classes=list(data["classes"]),
                   splits=data["splits"], labels=data.get("labels", {}),
                   aug_root=Path(aug_root) if aug_root else None,
                   manifest=data.get("manifest"), largest=data.get("largest", {}))


def _check_one(args: tuple[str, str | None, str, str, int, bool]
               ) -> tuple[str, list[int] | None, tuple[int, int]]:
    """Validate one image id; returns its label list (None for unlabelled splits) and its
    (height, width)."""
    root, aug_root, split, image_id, num_classes, needs_mask = args
    layout = VOCLayout(Path(root), Path(aug_root) if aug_root else None)
    img_path = layout.image(image_id)
    if not img_path.is_file():
        raise DatasetError(f"{split}: id {image_id!r} is listed but its image {img_path} is missing")
    try:
        with Image.open(img_path) as im:
            im.load()
            size = im.size
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"unreadable image {img_path}: {err}") from None
    if not needs_mask:
        return image_id, None, (size[1], size[0])
    mask_path = layout.label_source(image_id)
    if mask_path is None:
        raise DatasetError(f"{split}: id {image_id!r} is listed but has no mask "
                           f"({layout.aug_mask(image_id)} nor {layout.mask(image_id)})")
    labels: set[int] = set()
    for path in {mask_path, layout.gt_mask(image_id)}:
        mask = read_label(path)
        if (mask.shape[1], mask.shape[0]) != size:
            raise DatasetError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image "
                               f"{img_path} is {size[0]}x{size[1]}")
        values = np.unique(mask)
        bad = values[(values > num_classes) & (values != IGNORE)]
        if bad.size:
            raise DatasetError(f"mask {path} holds value {int(bad[0])}, outside the class range "
                               f"0..{num_classes} (255 = ignore); check dataset.classes")
        if path == mask_path:
            labels = {int(v) for v in values if 0 < v <= num_classes}
    return image_id, sorted(labels), (size[1], size[0])


def prepare_dataset(root: str | os.PathLike, classes: Sequence[str], splits: Sequence[str],
                    unlabelled_splits: Sequence[str] = (), workers: int = 1,
                    aug_root: str | os.PathLike | None = None,
                    split_ids: Mapping[str, Sequence[str]] | None = None) -> DatasetInfo:
    """Validate a VOC-layout dataset and derive its image-level labels, once.

    Every listed id must have a readable image; ids of ``splits`` must also have a mask
    of the same size whose values lie in ``0..len(classes)`` or are 255. Images whose
    mask holds no object class are kept (they count as background in evaluation) and
    counted in the log; training skips them. ``aug_root`` is a converted VOC-layout
    folder looked up first (see :class:`VOCLayout`); ``split_ids`` gives the ids of
    some splits directly instead of reading their lists.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset root not found: {root} (config key dataset.root)")
    aug = Path(aug_root).resolve() if aug_root else None
    info = DatasetInfo(root=root, classes=list(classes), splits={}, labels={}, aug_root=aug)
    jobs: list[tuple[str, str | None, str, str, int, bool]] = []
    for split in [*splits, *unlabelled_splits]:
        given = (split_ids or {}).get(split)
        ids = list(given) if given is not None else read_split(root, split, aug)
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise DatasetError(f"split list {info.layout.split_list(split)} lists {dup!r} twice")
        info.splits[split] = ids
        needs = split in splits
        jobs += [(str(root), str(aug) if aug else None, split, i, len(classes), needs) for i in ids]
    results = _map(_check_one, jobs, workers)
    for (_, _, split, image_id, _, needs), (_, labels, hw) in zip(jobs, results, strict=True):
        known = info.largest.get(split)
        if known is None or hw[0] * hw[1] > known[0] * known[1]:
            info.largest[split] = [int(hw[0]), int(hw[1])]
        if needs:
            info.labels.setdefault(split, {})[image_id] = labels
    for split in splits:
        empty = [i for i, v in info.labels[split].items() if not v]
        if empty:
            log.warning("%s: %d of %d images hold no object class (e.g. %s); training skips them",
                        split, len(empty), len(info.splits[split]), empty[0])
        log.info("%s: %d images, %d with objects", split, len(info.splits[split]),
                 len(info.splits[split]) - len(empty))
    for split in unlabelled_splits:
        log.info("%s: %d images (no masks)", split, len(info.splits[split]))
    return info


def _map(fn, jobs: list, workers: int) -> list:
    if workers <= 1 or len(jobs) < 64:
        return [fn(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, jobs, chunksize=max(1, len(jobs) // (workers * 8))))
