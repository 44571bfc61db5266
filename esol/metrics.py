"""Segmentation metrics: confusion matrices, IoU, foreground precision/recall, seed sweeps.

Conventions (IRN's ``eval_cam``, deeplab-pytorch's ``scores``): class 0 is background,
255 is ignored, IoU_c = TP / (GT + Pred - TP) and mIoU is the mean over classes whose
IoU is defined (NaN, i.e. absent from both ground truth and prediction, is skipped).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

IGNORE = 255


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """(n, n) int64 counts, rows = ground truth, columns = prediction; 255 in gt ignored."""
    gt, pred = np.asarray(gt).ravel(), np.asarray(pred).ravel()
    valid = gt != IGNORE
    return np.bincount(n * gt[valid].astype(np.int64) + pred[valid].astype(np.int64),
                       minlength=n * n).reshape(n, n)


def iou(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU (NaN where the class is in neither ground truth nor prediction)."""
    tp = np.diag(conf).astype(np.float64)
    denom = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


def mean_iou(conf: np.ndarray) -> float:
    return float(np.nanmean(iou(conf)))


def foreground_precision_recall(conf: np.ndarray) -> tuple[float, float]:
    """Class-aware foreground precision and recall over all pixels.

    A pixel counts as a true positive when it is predicted as its own object class.
    Precision = TP / pixels predicted as any object class; recall = TP / object pixels
    in the ground truth (the quantity of the paper's Fig. 3d).
    """
    tp = np.trace(conf) - conf[0, 0]
    pred_fg = conf[:, 1:].sum()
    gt_fg = conf[1:, :].sum()
    precision = tp / pred_fg if pred_fg else float("nan")
    recall = tp / gt_fg if gt_fg else float("nan")
    return float(precision), float(recall)


def pixel_accuracy(conf: np.ndarray) -> float:
    total = conf.sum()
    return float(np.trace(conf) / total) if total else float("nan")


def thresholds_from(start: float, stop: float, step: float) -> np.ndarray:
    """``start, start+step, ..., stop`` (inclusive), free of floating drift."""
    n = int(round((stop - start) / step)) + 1
    return np.round(start + step * np.arange(n), 6)


class SeedSweep:
    """Confusion matrices of CAM seeds at many background thresholds, in one pass.

    At threshold ``t`` a pixel takes the class of its largest CAM value ``m`` when
    ``m > t`` and background otherwise (IRN pads a background channel of value ``t``
    and takes the argmax, which prefers background on ties). Each pixel is binned once
    by how many thresholds lie below ``m``; cumulative sums give every threshold's
    confusion matrix exactly.
    """

    def __init__(self, num_classes: int, thresholds: Sequence[float]) -> None:
        self.n = num_classes + 1
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        if np.any(np.diff(self.thresholds) <= 0):
            raise ValueError("thresholds must increase strictly")
        nt = len(self.thresholds)
        # hist[g, a, j]: pixels of ground truth g whose best class a is foreground for the
        # first j thresholds exactly.
        self.hist = np.zeros((self.n, self.n, nt + 1), dtype=np.int64)

    def add(self, gt: np.ndarray, cams: np.ndarray, keys: np.ndarray) -> None:
        """Add one image: ``cams`` (k, H, W) normalised maps of classes ``keys`` (1-based)."""
        gt = np.asarray(gt)
        valid = gt != IGNORE
        g = gt[valid].astype(np.int64)
        if len(keys):
            cams = np.asarray(cams, dtype=np.float32)
            m = cams.max(0)[valid]
            a = np.asarray(keys, dtype=np.int64)[cams.argmax(0)[valid]]
        else:
            m = np.full(g.shape, -np.inf, dtype=np.float32)
            a = np.zeros_like(g)
        # Number of thresholds strictly below m: foreground for those. Compared in
        # float32, as the maps are, so ties go to background exactly as in IRN.
        j = np.searchsorted(self.thresholds.astype(np.float32), m, side="left")
        nt1 = len(self.thresholds) + 1
        idx = (g * self.n + a) * nt1 + j
        self.hist += np.bincount(idx, minlength=self.hist.size).reshape(self.hist.shape)

    def confusions(self) -> np.ndarray:
        """(T, n, n) confusion matrices, one per threshold."""
        nt = len(self.thresholds)
        # fg[g, a, t] = pixels with j > t  -> predicted a at threshold t.
        rev = np.cumsum(self.hist[..., ::-1], axis=-1)[..., ::-1]  # rev[..., j] = sum_{j'>=j}
        fg = rev[..., 1:nt + 1]  # j' >= t + 1
        bg = self.hist.sum(-1, keepdims=True) - fg  # the rest are background
        conf = np.moveaxis(fg, -1, 0).copy()  # (T, g, a)
        conf[:, :, 0] += np.moveaxis(bg.sum(1), -1, 0)
        return conf


@dataclass
class SweepRow:
    threshold: float
    miou: float
    precision: float
    recall: float
    pixel_accuracy: float


def sweep_rows(confs: np.ndarray, thresholds: Iterable[float]) -> list[SweepRow]:
    rows = []
    for t, conf in zip(thresholds, confs, strict=True):
        p, r = foreground_precision_recall(conf)
        rows.append(SweepRow(float(t), mean_iou(conf), p, r, pixel_accuracy(conf)))
    return rows


def best_row(rows: Sequence[SweepRow]) -> int:
    """Index of the threshold with the highest mIoU (the lowest such threshold on ties)."""
    return int(np.argmax([r.miou for r in rows]))
