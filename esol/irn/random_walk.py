"""Random walk on the boundary-derived affinities: CAMs to semantic pseudo labels.

IRN (Ahn et al. CVPR 2019, section 4.1; ``misc/indexing.py propagate_to_edge`` and
``step/make_sem_seg_labels.py``): pixels of the stride-4 grid closer than ``radius``
are connected with affinity ``a_ij = 1 - max`` boundary along the line between them
(each pixel with itself: 1); ``A = a^beta``; the transition matrix normalises ``A``;
the CAMs, damped on boundaries by ``(1 - B)``, are propagated by ``2^exp_times``
steps of the walk. Upsampled by 4, divided by their maximum, with a background score
``bg_threshold``, the argmax is the pseudo label.

Bounded memory: IRN builds the dense ``n x n`` matrix and squares it ``exp_times``
times (``T^(2^t)``), which for a 500x375 image (n = 11 750 stride-4 pixels) holds
several 550 MB matrices (its known out-of-memory point). Here the matrix stays sparse
(about ``(2 * |offsets| + 1) * n`` entries, 69 per pixel at radius 5) and the walk
applies it ``2^exp_times`` times to the score vectors: ``x T^(2^t)`` computed as
``(((x T) T) ...)``, the same product in another order, in O(n * neighbours) memory.
The matrix and the walk are the refiners' shared core (:mod:`esol.refiners.core`);
this module gives it IRN's boundary-derived affinities.

Orientation: IRN's ``T`` normalises the *columns* of the symmetric ``A`` and computes
``rw = x T^k`` for row vectors ``x``. Its transpose ``P = D^-1 A`` (``D`` the degrees)
is row-stochastic, and ``rw^T = P^k x^T``: each step replaces a pixel's score by the
``P``-weighted mean of its neighbours' scores. This module builds ``P``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from esol.irn.paths import pair_index, path_affinity
from esol.refiners import core


def transition_matrix(boundary: torch.Tensor, radius: int, beta: float) -> torch.Tensor:
    """Row-stochastic sparse (CSR) ``P = D^-1 A^beta`` of an (h, w) boundary map, (n, n)."""
    h, w = boundary.shape[-2:]
    index = pair_index((int(h), int(w)), int(radius))
    t = index.tensors(boundary.device)
    aff = path_affinity(boundary.reshape(1, h, w).float(), index)[0].clamp_min(0) ** beta
    return core.transition_matrix(t["src"], t["dst"], aff, int(h * w))


def random_walk(scores: torch.Tensor, boundary: torch.Tensor, radius: int = 5, beta: float = 10,
                exp_times: int = 8) -> torch.Tensor:
    """Propagate (C, h, w) scores by ``2^exp_times`` steps of the walk on ``boundary`` (h, w).

    The scores are first multiplied by ``1 - boundary`` (IRN: no seed mass starts on a
    boundary). Returns (C, h, w).
    """
    if scores.shape[0] == 0:
        return scores.float()
    p = transition_matrix(boundary, radius, beta)
    return core.random_walk(scores.float() * (1 - boundary.float()), p, 2 ** int(exp_times))


def walk_to_label(walked: torch.Tensor, keys: np.ndarray, size: tuple[int, int],
                  bg_threshold: float) -> np.ndarray:
    """Pseudo label (H, W) uint8 of mask values from walked stride-4 scores (C, h, w).

    As IRN's ``make_sem_seg_labels``: bilinear upsampling by 4 (cropped to ``size``),
    division by the maximum over all classes and pixels, a background channel of value
    ``bg_threshold`` first, argmax (ties go to background), indices mapped to ``keys``.
    """
    height, width = size
    if walked.shape[0] == 0:
        return np.zeros(size, np.uint8)
    up = F.interpolate(walked[None].float(), scale_factor=4, mode="bilinear",
                       align_corners=False)[0, :, :height, :width]
    peak = up.max()
    if not torch.isfinite(peak) or peak <= 0:
        return np.zeros(size, np.uint8)
    up = up / peak
    bg = torch.full((1, height, width), float(bg_threshold), device=up.device)
    pred = torch.cat([bg, up]).argmax(0).cpu().numpy()
    lut = np.concatenate([[0], np.asarray(keys, dtype=np.int64)]).astype(np.uint8)
    return lut[pred]
