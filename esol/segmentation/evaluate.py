"""Rule ``eval_segmentation``: mIoU and per-class IoU of stored predictions, with and without CRF.

Confusion matrix over every image of the split against ``SegmentationClass`` (255
ignored), IoU = TP / (GT + Pred - TP), mean over the classes present in either
(deeplab-pytorch's ``scores``, IRN's ``eval_sem_seg``); :mod:`esol.metrics` does the sums.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from esol import metrics
from esol.data.voc import DatasetInfo, read_label
from esol.evaluate import ground_truth_provenance, write_json
from esol.utils import DatasetError, tqdm_kwargs

log = logging.getLogger(__name__)


def prediction_confusion(pred_dir: str | os.PathLike, info: DatasetInfo, split: str,
                         ids: Sequence[str] | None = None) -> np.ndarray:
    """(K+1, K+1) confusion matrix of the ``<id>.png`` label maps in ``pred_dir``."""
    pred_dir = Path(pred_dir)
    n = info.num_classes + 1
    conf = np.zeros((n, n), dtype=np.int64)
    for image_id in tqdm(ids if ids is not None else info.ids(split), desc=f"eval {pred_dir.name}",
                         unit="img", **tqdm_kwargs()):
        gt_path = info.layout.gt_mask(image_id)
        if gt_path is None:
            raise DatasetError(f"no ground-truth mask for {image_id!r} under {info.root}")
        gt = read_label(gt_path)
        pred = read_label(pred_dir / f"{image_id}.png")
        if pred.shape != gt.shape:
            raise DatasetError(f"prediction {pred_dir / (image_id + '.png')} is {pred.shape} but its "
                               f"mask {gt_path} is {gt.shape}")
        if pred.max(initial=0) >= n:
            raise DatasetError(f"prediction {pred_dir / (image_id + '.png')} holds class "
                               f"{int(pred.max())}, outside 0..{n - 1}")
        conf += metrics.confusion_matrix(gt, pred, n)
    return conf


def summarize(conf: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """mIoU, per-class IoU (None where undefined), pixel accuracy and the matrix itself."""
    ious = metrics.iou(conf)
    names = ["background", *classes]
    return {"miou": metrics.mean_iou(conf), "pixel_accuracy": metrics.pixel_accuracy(conf),
            "per_class_iou": {c: (None if np.isnan(v) else float(v)) for c, v in zip(names, ious, strict=True)},
            "confusion": conf.tolist()}


def evaluate_segmentation(dataset_json: str | os.PathLike, split: str, raw_dir: str | os.PathLike,
                          crf_dir: str | os.PathLike, out_json: str | os.PathLike,
                          source: str) -> dict[str, Any]:
    """The JSON of one label source on one split: ``raw`` (no CRF) and ``crf`` results."""
    info = DatasetInfo.from_json(dataset_json)
    if split not in info.labels:
        raise DatasetError(f"split {split!r} has no masks to evaluate against")
    result = {"source": source, "split": split, "images": len(info.ids(split)),
              "raw": summarize(prediction_confusion(raw_dir, info, split), info.classes),
              "crf": summarize(prediction_confusion(crf_dir, info, split), info.classes),
              "threshold_choice": "none: DeepLab's argmax (predict.crf settings fixed in config)",
              "ground_truth": ground_truth_provenance(info, split, prediction_255="rejected")}
    write_json(out_json, result)
    log.info("%s on %s: mIoU %.4f without CRF, %.4f with CRF", source, split, result["raw"]["miou"],
             result["crf"]["miou"])
    return result
