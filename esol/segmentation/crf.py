"""Dense CRF post-processing of segmentation scores, deeplab-pytorch's ``DenseCRF``.

A fully connected CRF (Kraehenbuehl & Koltun, NIPS 2011) through ``pydensecrf``
(the ``pydensecrf2`` package): unary ``-log p`` from the softmax scores, a Gaussian
kernel (``pos_xy_std``, weight ``pos_w``) and a bilateral kernel (``bi_xy_std``,
``bi_rgb_std``, weight ``bi_w``), mean-field for ``iterations`` steps. deeplab-pytorch's
VOC settings: 10 iterations, pos_w 3, pos_xy_std 1, bi_w 4, bi_xy_std 67, bi_rgb_std 3.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

DEEPLAB_CRF = {"iterations": 10, "pos_w": 3, "pos_xy_std": 1, "bi_w": 4, "bi_xy_std": 67,
               "bi_rgb_std": 3}


def dense_crf(image: np.ndarray, probs: np.ndarray, params: Mapping[str, float] = DEEPLAB_CRF) -> np.ndarray:
    """Refined class probabilities (C, H, W) of ``probs`` (C, H, W) on RGB uint8 ``image``."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    c, h, w = probs.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image is {image.shape[:2]} but the scores are {(h, w)}")
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.astype(np.float32))))
    crf.addPairwiseGaussian(sxy=params["pos_xy_std"], compat=params["pos_w"])
    crf.addPairwiseBilateral(sxy=params["bi_xy_std"], srgb=params["bi_rgb_std"],
                             rgbim=np.array(image, dtype=np.uint8, order="C"), compat=params["bi_w"])
    q = crf.inference(int(params["iterations"]))
    return np.asarray(q, dtype=np.float32).reshape(c, h, w)


def crf_label(image: np.ndarray, probs: np.ndarray, params: Mapping[str, float] = DEEPLAB_CRF) -> np.ndarray:
    """The CRF-refined label map (H, W) uint8: argmax of :func:`dense_crf`."""
    return dense_crf(image, probs, params).argmax(0).astype(np.uint8)
