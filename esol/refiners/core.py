"""What every affinity refiner shares: pixel pairs within a radius, their relation labels,
and the random walk on pair affinities.

IRN (Ahn et al. CVPR 2019) and PSA/AffinityNet (Ahn & Kwak CVPR 2018) refine CAMs the
same way once they have an affinity ``a_ij`` in [0, 1] for every pair of grid pixels
closer than a radius: ``A = a^beta`` (symmetric, 1 on the diagonal), the walk's
transition matrix normalises ``A``, and the score maps are propagated by ``2^t`` steps.
They differ in where ``a`` comes from: IRN derives it from a class-boundary map
(``esol.irn.paths.path_affinity``, stride 4), PSA predicts it as
``exp(-mean_c |f_i - f_j|)`` of learned features (``esol.refiners.psa``, stride 8).

**Pairs** (PSA ``tool/pyutils.get_indices_of_pairs``, IRN ``misc/indexing.py``): a pair
is taken once, its offset ``(dy, dx)`` from first to second pixel in the forward
half-disc ``dy > 0 or (dy == 0 and dx > 0)``, ``dy^2 + dx^2 < r^2``. Both reference
codes keep only pairs whose first pixel lies in an inner rectangle of the map (every
offset then has the same number of pairs, so they reshape to a dense block); here every
pair inside the map is used, as :mod:`esol.irn.paths` does for IRN, so pixels on the
left, right and bottom border are connected too (in PSA's inference the top-left
corner pixel otherwise has no pair at all). Pairs are ordered offset by offset (the
order of :func:`forward_offsets`), row-major within an offset, so each offset's pairs
are one rectangular slice of the map (:attr:`Pairs.slices`): features are compared by
slicing, not by gathering.

**Walk** (IRN ``step/make_sem_seg_labels.py``, PSA ``infer_aff.py``): both build the
dense ``n x n`` matrix ``T`` (``A`` normalised over columns) and compute ``x T^(2^t)``
by squaring ``T`` ``t`` times. The transpose ``P = D^-1 A`` is row-stochastic and
``(x T^k)^T = P^k x^T``; :func:`transition_matrix` builds ``P`` as a sparse CSR matrix
(``2 P + n`` entries for ``P`` pairs) and :func:`random_walk` applies it ``2^t`` times:
the same product in another order, in memory linear in the pixel count.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

IGNORE = 255


def forward_offsets(radius: int) -> np.ndarray:
    """Offsets ``(dy, dx)`` of the forward half-disc of ``radius``, shape (D, 2), in PSA's
    ``search_dist`` order: ``(0, 1) .. (0, r-1)``, then row by row ``dy = 1 .. r-1``."""
    r = int(radius)
    if r < 2:
        raise ValueError(f"the pair radius must be at least 2 (a neighbour at distance 1), got {radius}")
    offsets = [(0, dx) for dx in range(1, r)]
    offsets += [(dy, dx) for dy in range(1, r) for dx in range(-r + 1, r) if dy * dy + dx * dx < r * r]
    return np.asarray(offsets, dtype=np.int64)


@dataclass
class Pairs:
    """Every pair of pixels closer than ``radius`` in an ``(h, w)`` map.

    ``src``, ``dst`` (P,) are flat indices ``y * w + x``; ``slices`` holds, per offset,
    ``(dy, dx, y0, y1, x0, x1)``: the pairs of that offset are the sources
    ``[y0:y1, x0:x1]`` (row-major) and their destinations shifted by ``(dy, dx)``.
    """

    size: tuple[int, int]
    radius: int
    src: np.ndarray
    dst: np.ndarray
    slices: list[tuple[int, int, int, int, int, int]]
    _tensors: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.src.size)

    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(src, dst)`` as int64 tensors on ``device`` (cached per device)."""
        key = str(device)
        if key not in self._tensors:
            self._tensors[key] = (torch.from_numpy(self.src).to(device),
                                  torch.from_numpy(self.dst).to(device))
        return self._tensors[key]


@lru_cache(maxsize=8)
def pairs_in_radius(size: tuple[int, int], radius: int) -> Pairs:
    """All pairs of an ``(h, w)`` map closer than ``radius`` (cached: crops share a size)."""
    h, w = int(size[0]), int(size[1])
    srcs, dsts, slices = [], [], []
    for dy, dx in forward_offsets(radius).tolist():
        y0, y1 = 0, h - dy
        x0, x1 = max(0, -dx), min(w, w - dx)
        if y1 <= y0 or x1 <= x0:
            continue
        ys, xs = np.meshgrid(np.arange(y0, y1), np.arange(x0, x1), indexing="ij")
        src = (ys * w + xs).ravel()
        srcs.append(src)
        dsts.append(src + dy * w + dx)
        slices.append((dy, dx, y0, y1, x0, x1))
    empty = np.zeros(0, dtype=np.int64)
    return Pairs((h, w), int(radius), np.concatenate(srcs) if srcs else empty,
                 np.concatenate(dsts) if dsts else empty, slices)


def relation_labels(label: torch.Tensor, pairs: Pairs) -> dict[str, torch.Tensor]:
    """Affinity labels of every pair from label maps (B, h, w) of indices, 255 = unsure.

    PSA ``voc12/data.py ExtractAffinityLabelInRadius`` (IRN's dataloader is the same):
    ``bg_pos`` both pixels background (0), ``fg_pos`` both the same non-background
    label, ``neg`` different labels; a pair with a 255 pixel is in none. Float (B, P).
    """
    src, dst = pairs.tensors(label.device)
    flat = label.reshape(label.shape[0], -1)
    if flat.shape[1] != pairs.size[0] * pairs.size[1]:
        raise ValueError(f"label map of {tuple(label.shape[-2:])} pixels does not match the pairs "
                         f"built for {pairs.size}")
    a, b = flat[:, src], flat[:, dst]
    valid = (a != IGNORE) & (b != IGNORE)
    same = (a == b) & valid
    return {"bg_pos": (same & (a == 0)).float(), "fg_pos": (same & (a != 0)).float(),
            "neg": ((a != b) & valid).float()}


def transition_matrix(src: torch.Tensor, dst: torch.Tensor, affinity: torch.Tensor,
                      n: int) -> torch.Tensor:
    """Row-stochastic sparse (CSR) ``P = D^-1 A`` of ``n`` pixels, (n, n).

    ``A`` has ``affinity`` (already raised to ``beta``) at ``(src, dst)`` and
    ``(dst, src)`` and 1 on the diagonal (each pixel with itself, as IRN's
    ``to_transition_matrix`` and PSA's ``indices_id``); ``D`` its row sums.
    """
    device = affinity.device
    diag = torch.arange(n, device=device)
    rows = torch.cat([src, dst, diag])
    cols = torch.cat([dst, src, diag])
    vals = torch.cat([affinity, affinity, torch.ones(n, device=device)])
    degree = torch.zeros(n, device=device).index_add_(0, rows, vals)
    vals = vals / degree[rows]
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n),
                                  check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


def random_walk(scores: torch.Tensor, transition: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` steps of the walk ``P`` on score maps (C, h, w): each step replaces a
    pixel's scores by the ``P``-weighted mean of its neighbours'. Returns (C, h, w)."""
    c, h, w = scores.shape
    if c == 0:
        return scores.float()
    x = scores.reshape(c, h * w).T.contiguous()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        for _ in range(int(steps)):
            x = transition @ x
    return x.T.reshape(c, h, w)
