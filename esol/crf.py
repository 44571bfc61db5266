"""The dense CRF (Kraehenbuehl & Koltun, NIPS 2011) of the pipeline: one wrapper, two uses.

Both uses share :func:`dense_crf` and one settings shape, ``{iterations, gaussian: {sxy,
compat}, bilateral: {sxy, srgb, compat}}``; they differ in the unary term only.

* Seeds and IR labels (config ``refine.crf``) as IRN's ``crf_inference_label``
  (``misc/imutils.py``) refines a hard label map: each pixel's given label gets
probability ``gt_prob`` and the others share the rest (pydensecrf's
``unary_from_labels`` without an "unsure" label), a Gaussian kernel (``sxy`` 3,
``compat`` 3) smooths, a bilateral kernel (``sxy`` 50, ``srgb`` 5, ``compat`` 10) snaps
labels to colour edges, and ``t`` = 10 mean-field iterations run. The settings come
from config section ``refine.crf``.

Seeds become label maps by a background score: a background channel of value ``t``
is put before the class maps and the argmax taken (ties go to background), as the
seed evaluation and IRN's ``cam_to_ir_label`` do. :func:`crf_label` is that map after
the CRF; :func:`ir_label` is IRN's confident-region label (``cam_to_ir_label``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels, unary_from_softmax

from esol.data.voc import IGNORE


# deeplab-pytorch's VOC settings, in this module's shape.
DEEPLAB_CRF = {"iterations": 10, "gaussian": {"sxy": 1, "compat": 3},
               "bilateral": {"sxy": 67, "srgb": 3, "compat": 4}}


def dense_crf(image: np.ndarray, unary: np.ndarray, cfg: Mapping[str, Any]) -> np.ndarray:
    """Mean-field marginals (C, H, W) float32 for unary energies ``unary`` (C, H*W) on an RGB image.

    ``cfg``: ``iterations``, ``gaussian`` {``sxy``, ``compat``}, ``bilateral`` {``sxy``,
    ``srgb``, ``compat``}.
    """
    c = unary.shape[0]
    h, w = image.shape[:2]
    if unary.shape[1] != h * w:
        raise ValueError(f"image {(h, w)} and the CRF's unary term ({unary.shape[1]} pixels) differ in size")
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    g, b = cfg["gaussian"], cfg["bilateral"]
    crf.addPairwiseGaussian(sxy=g["sxy"], compat=g["compat"])
    crf.addPairwiseBilateral(sxy=b["sxy"], srgb=b["srgb"],
                             rgbim=np.array(image, dtype=np.uint8, order="C"),  # a writable copy
                             compat=b["compat"])
    q = crf.inference(int(cfg["iterations"]))
    return np.asarray(q, dtype=np.float32).reshape(c, h, w)


def crf_inference_label(image: np.ndarray, labels: np.ndarray, n_labels: int,
                        cfg: Mapping[str, Any]) -> np.ndarray:
    """Dense-CRF refinement of a label map of indices ``0..n_labels-1`` on an RGB image.

    ``cfg``: :func:`dense_crf`'s settings and ``gt_prob``. Returns (H, W) int64 indices.
    """
    h, w = labels.shape
    if n_labels < 2:
        return np.zeros((h, w), np.int64)
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {image.shape[:2]} and label map {(h, w)} differ in size")
    unary = unary_from_labels(labels.astype(np.int64), n_labels, cfg["gt_prob"], zero_unsure=False)
    return dense_crf(image, unary, cfg).argmax(0).astype(np.int64)


def crf_probs(image: np.ndarray, probs: np.ndarray, cfg: Mapping[str, Any] = DEEPLAB_CRF) -> np.ndarray:
    """Refined class probabilities (C, H, W) of softmax scores ``probs`` (deeplab-pytorch)."""
    if image.shape[:2] != probs.shape[1:]:
        raise ValueError(f"image is {image.shape[:2]} but the scores are {probs.shape[1:]}")
    return dense_crf(image, unary_from_softmax(probs.astype(np.float32)), cfg)


def crf_argmax(image: np.ndarray, probs: np.ndarray, cfg: Mapping[str, Any] = DEEPLAB_CRF) -> np.ndarray:
    """The CRF-refined label map (H, W) uint8 of softmax scores: argmax of :func:`crf_probs`."""
    return crf_probs(image, probs, cfg).argmax(0).astype(np.uint8)


def threshold_indices(cams: np.ndarray, threshold: float) -> np.ndarray:
    """Argmax over [background = ``threshold``, class maps]: indices 0 (bg) .. n, (H, W)."""
    cams = np.asarray(cams, dtype=np.float32)
    bg = np.full((1, *cams.shape[1:]), threshold, dtype=np.float32)
    return np.concatenate([bg, cams]).argmax(0)


def crf_label(image: np.ndarray, cams: np.ndarray, keys: np.ndarray, threshold: float,
              cfg: Mapping[str, Any]) -> np.ndarray:
    """The seed at background score ``threshold`` after the CRF, as mask values (H, W) uint8.

    ``cams`` (n, H, W) are the normalised maps of the classes ``keys`` (mask values).
    """
    lut = np.concatenate([[0], np.asarray(keys, dtype=np.int64)]).astype(np.uint8)
    idx = threshold_indices(cams, threshold)
    return lut[crf_inference_label(image, idx, len(lut), cfg)]


def ir_label(image: np.ndarray, cams: np.ndarray, keys: np.ndarray, conf_fg: float,
             conf_bg: float, cfg: Mapping[str, Any]) -> np.ndarray:
    """IRN's label for relation learning (``step/cam_to_ir_label.py``), (H, W) uint8.

    ``fg`` = CRF of the seed at background score ``conf_fg`` (confident foreground),
    ``bg`` = CRF of the seed at ``conf_bg`` (confident background). A pixel keeps its
    class where ``fg`` has one, is background where both are background, and 255 in
    the band between (``fg`` background, ``bg`` foreground).
    """
    fg = crf_label(image, cams, keys, conf_fg, cfg)
    bg = crf_label(image, cams, keys, conf_bg, cfg)
    out = fg.copy()
    out[fg == 0] = IGNORE
    out[(fg == 0) & (bg == 0)] = 0
    return out
