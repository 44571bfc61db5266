"""MS COCO 2014 into the VOC layout: semantic masks rendered from instance annotations.

Input, as COCO publishes it: ``annotations/instances_{train,val}2014.json`` and the
image folders ``train2014/``, ``val2014/``. Output, a VOC-layout folder every later rule
reads unchanged:

* ``JPEGImages/<id>.jpg``: a symbolic link to the COCO image (``<id>`` is the file
  name without ``.jpg``, e.g. ``COCO_train2014_000000000009``); nothing is copied;
* ``SegmentationClass/<id>.png``: the semantic mask (VOC palette), 0 = background,
  ``1..80`` = the 80 categories in increasing COCO category id (the ids run 1..90 with
  gaps), 255 = crowd regions (``iscrowd: 1``, "many objects, not separated") that no
  single instance covers;
* ``ImageSets/Segmentation/<split>.txt``, and a manifest with the class names and
  their COCO category ids.

Rendering follows ``pycocotools`` (``COCO.annToMask``): polygons through
``frPyObjects`` + ``merge``, uncompressed RLE (crowd regions) through ``frPyObjects``,
compressed RLE as is. Where instances overlap, larger ones are painted first so a
smaller object stays visible on top of the one it occludes (ties by annotation id);
crowd regions are painted before every instance, so an individually annotated object
inside a crowd keeps its class.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from esol.data.convert import (is_fresh, link_atomic, missing_report, require_dir,
                               require_file, worker_pool, write_lines)
from esol.data.voc import IGNORE, IMAGE_DIR, MASK_DIR, SPLIT_DIR, write_label
from esol.utils import DatasetError

log = logging.getLogger(__name__)

# Published sizes of the 2014 release (ESOL 4.1: ~82K train, 40504 val).
COCO14_COUNTS: dict[str, int] = {"train": 82783, "val": 40504}


def category_map(categories: Sequence[Mapping[str, Any]], source: str = "annotations"
                 ) -> tuple[list[int], list[str]]:
    """COCO category ids in increasing order and their names: mask value ``i + 1`` is
    ``ids[i]``, named ``names[i]`` (80 categories, ids 1..90 with gaps)."""
    try:
        cats = sorted((int(c["id"]), str(c["name"])) for c in categories)
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{source}: 'categories' entries need an integer 'id' and a 'name'") from None
    if not cats:
        raise DatasetError(f"{source} lists no categories")
    if len(cats) > 254:
        raise DatasetError(f"{source} lists {len(cats)} categories; a uint8 mask holds at most 254")
    return [c for c, _ in cats], [n for _, n in cats]


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """One annotation's binary mask (H, W) uint8, as ``pycocotools`` ``annToMask``."""
    if isinstance(segmentation, list):  # polygons: [[x0, y0, x1, y1, ...], ...]
        polys = [p for p in segmentation if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        if list(segmentation.get("size", [])) != [height, width]:
            raise ValueError(f"RLE size {segmentation.get('size')} differs from the image's "
                             f"{[height, width]}")
        if isinstance(segmentation["counts"], list):  # uncompressed RLE (crowd regions)
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:  # compressed RLE
            rle = segmentation
    else:
        raise ValueError(f"unknown segmentation format {type(segmentation).__name__}")
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword notice, harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.asarray(mask_utils.decode(rle), dtype=np.uint8)


def render_semantic(height: int, width: int, anns: Sequence[Mapping[str, Any]],
                    label_of: Mapping[int, int]) -> np.ndarray:
    """The semantic mask of one image from its instance annotations (module docstring).

    ``anns`` hold ``segmentation``, ``category_id``, ``iscrowd`` and ``id``;
    ``label_of`` maps a category id to its mask value.
    """
    label = np.zeros((height, width), np.uint8)
    objects = []
    for ann in anns:
        m = annotation_mask(ann["segmentation"], height, width).astype(bool)
        if ann.get("iscrowd", 0):
            label[m] = IGNORE
        else:
            objects.append((-int(m.sum()), int(ann.get("id", 0)), m, label_of[ann["category_id"]]))
    for _, _, m, value in sorted(objects, key=lambda o: (o[0], o[1])):
        label[m] = value
    return label


def _convert_one(job: tuple[str, str, str, str, int, int, list, dict]) -> tuple[bool, bool]:
    """Render one image's mask and link its image; returns (written, class only in a crowd)."""
    image_path, link, mask_path, source, height, width, anns, label_of = job
    crowd_only = bool({a["category_id"] for a in anns if a.get("iscrowd", 0)}
                      - {a["category_id"] for a in anns if not a.get("iscrowd", 0)})
    linked = os.path.islink(link) and os.readlink(link) == image_path
    if linked and is_fresh(mask_path, [source]):
        return False, crowd_only
    try:
        label = render_semantic(height, width, anns, label_of)
    except (ValueError, TypeError, KeyError) as err:
        raise DatasetError(f"{source}: cannot render the annotations of {Path(image_path).name}: "
                           f"{err}") from None
    write_label(mask_path, label)
    if not linked:
        link_atomic(image_path, link)
    return True, crowd_only


def _load_annotations(path: Path) -> dict[str, Any]:
    log.info("reading %s", path)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read COCO annotations {path}: {err}") from None
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise DatasetError(f"{path} is not a COCO instances file: it has no {missing} "
                           "(expected instances_<split>2014.json)")
    return data


def _jobs(data: dict[str, Any], images_dir: Path, out_root: Path, source: Path,
          label_of: dict[int, int]) -> tuple[list[str], Iterator[tuple]]:
    """Ids of a split (sorted by file name) and a lazy stream of per-image jobs."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in data["annotations"]:
        cat = ann.get("category_id")
        if cat not in label_of:
            raise DatasetError(f"{source}: annotation {ann.get('id')} has category_id {cat}, "
                               "which its 'categories' do not list")
        by_image[ann["image_id"]].append({k: ann[k] for k in ("segmentation", "category_id", "id")
                                          if k in ann} | {"iscrowd": ann.get("iscrowd", 0)})
    images = sorted(data["images"], key=lambda im: im["file_name"])
    ids = [Path(im["file_name"]).stem for im in images]
    present = {e.name for e in os.scandir(images_dir)}
    missing = [im["file_name"] for im in images if im["file_name"] not in present]
    if missing:
        raise DatasetError("COCO images are missing:\n  " + missing_report(
            images_dir, f"images listed in {source.name}", missing, len(images)))
    image_dir = images_dir.resolve()

    def stream() -> Iterator[tuple]:
        for im, image_id in zip(images, ids, strict=True):
            yield (str(image_dir / im["file_name"]), str(out_root / IMAGE_DIR / f"{image_id}.jpg"),
                   str(out_root / MASK_DIR / f"{image_id}.png"), str(source),
                   int(im["height"]), int(im["width"]), by_image.get(im["id"], []), label_of)

    return ids, stream()


def convert_coco(splits: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]],
                 out_root: str | os.PathLike, workers: int = 1) -> dict[str, Any]:
    """Convert COCO splits (``{split: (instances json, image folder)}``) to the VOC layout.

    Splits are converted one after another (one annotation file in memory at a time);
    within a split the images are rendered in parallel by ``workers`` processes, one
    mask written atomically per image. Resumable: a mask newer than its annotation file,
    with its image link in place, is kept. All splits must list the same categories.
    Returns the manifest: classes, category ids and per-split counts.
    """
    out_root = Path(out_root)
    inputs = {}
    for split, (ann_path, images_dir) in splits.items():  # check every input before any work
        inputs[split] = (require_file(ann_path, f"COCO {split} annotations",
                                      f"dataset.coco.splits.{split}.annotations"),
                         require_dir(images_dir, f"COCO {split} images",
                                     f"dataset.coco.splits.{split}.images"))
    manifest: dict[str, Any] = {"classes": None, "category_ids": None, "splits": {},
                                "out_root": str(out_root.resolve())}
    with worker_pool(workers) as imap:  # forked before any annotation file is loaded
        for split, (ann_path, images_dir) in inputs.items():
            data = _load_annotations(ann_path)
            cat_ids, names = category_map(data["categories"], str(ann_path))
            if manifest["category_ids"] is None:
                manifest["category_ids"], manifest["classes"] = cat_ids, names
            elif (cat_ids, names) != (manifest["category_ids"], manifest["classes"]):
                raise DatasetError(f"{ann_path} lists other categories than "
                                   f"{inputs[next(iter(inputs))][0]}")
            label_of = {c: i + 1 for i, c in enumerate(cat_ids)}
            ids, jobs = _jobs(data, images_dir, out_root, ann_path, label_of)
            n_anns = len(data["annotations"])
            del data
            written = crowd_only = 0
            for w, c in imap(_convert_one, jobs, len(ids), f"COCO {split}"):
                written += w
                crowd_only += c
            write_lines(out_root / SPLIT_DIR / f"{split}.txt", ids)
            manifest["splits"][split] = {"images": len(ids), "annotations": n_anns,
                                         "written": written, "up_to_date": len(ids) - written,
                                         "images_with_a_class_only_in_crowds": crowd_only,
                                         "annotations_file": str(Path(ann_path).resolve()),
                                         "images_dir": str(Path(images_dir).resolve())}
            log.info("%s: %d images (%d written, %d up to date), %d annotations; %d images hold "
                     "a class only as a crowd region (255 in the mask, so not in the image's "
                     "labels)", split, len(ids), written, len(ids) - written, n_anns, crowd_only)
            expected = COCO14_COUNTS.get(split)
            if expected is not None and len(ids) != expected:
                log.warning("%s: %d images; COCO 2014 publishes %d", split, len(ids), expected)
    return manifest


def coco_splits_from_config(cfg_dataset: Mapping[str, Any]) -> dict[str, tuple[Path, Path]]:
    """``dataset.coco`` as ``{split: (annotation file, image folder)}``, paths resolved
    against ``dataset.coco.root``."""
    coco = cfg_dataset.get("coco") or {}
    if not coco.get("root"):
        raise DatasetError("dataset.coco.root must name the COCO folder when dataset.source is 'coco'")
    root = Path(coco["root"]).expanduser()
    return {split: (root / s["annotations"], root / s["images"])
            for split, s in coco["splits"].items()}


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read the COCO conversion manifest {path}: {err} "
                           "(rule convert_coco writes it)") from None
