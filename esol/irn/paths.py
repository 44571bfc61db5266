"""Pixel pairs within a radius, the pixels between them, and what IRN derives from them.

IRN (Ahn et al., CVPR 2019, section 3; reference code ``misc/indexing.py``) relates
each pixel of the stride-4 grid to every pixel closer than a radius ``r``. A pair is
taken once: the offset ``(dy, dx)`` from its first pixel to its second lies in the
forward half-disc, ``dy > 0`` or ``dy == 0 and dx > 0``, with ``dy^2 + dx^2 < r^2``
(IRN's ``get_all_dir_paths``). The *path* of a pair is the set of lattice points in
the bounding box of the two pixels whose distance to the line through them is below
one pixel; both end points belong to it.

From a class-boundary map ``B`` the affinity of a pair is ``1 - max_{k in path} B_k``
(IRN's ``edge_to_affinity``): two pixels are related unless a boundary crosses the
line between them. From a label map the relation labels are positive (same label,
split into background and foreground pairs), negative (different labels) or ignored
(either pixel is 255).

Unlike IRN's code, which keeps only pairs whose first pixel lies in a fixed inner
rectangle of the map (a shortcut that gives every direction the same number of
pairs), every pair inside the map is used here: the set IRN's paper defines.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache

import numpy as np
import torch

from esol.data.voc import IGNORE
from esol.refiners.core import forward_offsets  # noqa: F401  (IRN's pairs are the core's)


def line_pixels(dy: int, dx: int) -> np.ndarray:
    """Lattice points between ``(0, 0)`` and ``(dy, dx)`` within one pixel of the line, (L, 2).

    A point ``(y, x)`` of the bounding box is on the path when its squared distance to
    the line, ``(dy*x - dx*y)^2 / (dy^2 + dx^2)``, is below 1.
    """
    n2 = dy * dy + dx * dx
    pts = [(y, x) for y in range(min(0, dy), max(0, dy) + 1)
           for x in range(min(0, dx), max(0, dx) + 1) if (dy * x - dx * y) ** 2 < n2]
    return np.asarray(pts, dtype=np.int64)


class PairIndex:
    """Every pair of pixels closer than ``radius`` in an ``(h, w)`` map, with its path.

    ``src``, ``dst`` (P,) are flat pixel indices (``y * w + x``) and ``offset`` (P, 2)
    is ``dst - src`` as ``(dy, dx)``. Pairs are grouped by path length so that a
    group's paths gather as one (L, n) index array: ``groups`` holds
    ``(start, path)`` where pairs ``start .. start + n`` have the flat indices
    ``path[:, j]`` on their path.
    """

    def __init__(self, size: tuple[int, int], radius: int) -> None:
        h, w = int(size[0]), int(size[1])
        self.size, self.radius = (h, w), int(radius)
        buckets: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {}
        for dy, dx in forward_offsets(radius):
            y0, y1 = 0, h - dy
            x0, x1 = max(0, -dx), min(w, w - dx)
            if y1 <= y0 or x1 <= x0:
                continue
            ys, xs = np.meshgrid(np.arange(y0, y1), np.arange(x0, x1), indexing="ij")
            src = (ys * w + xs).ravel()
            line = line_pixels(int(dy), int(dx))
            path = (line[:, 0:1] * w + line[:, 1:2]) + src[None]  # (L, n)
            off = np.broadcast_to(np.array([dy, dx]), (src.size, 2))
            buckets.setdefault(len(line), []).append((src, src + dy * w + dx, off, path))
        srcs, dsts, offs, self.groups = [], [], [], []
        start = 0
        for length in sorted(buckets):
            parts = buckets[length]
            srcs += [p[0] for p in parts]
            dsts += [p[1] for p in parts]
            offs += [p[2] for p in parts]
            path = np.concatenate([p[3] for p in parts], axis=1)
            self.groups.append((start, path))
            start += path.shape[1]
        empty = np.zeros(0, dtype=np.int64)
        self.src = np.concatenate(srcs) if srcs else empty
        self.dst = np.concatenate(dsts) if dsts else empty
        self.offset = np.concatenate(offs) if offs else empty.reshape(0, 2)
        self._tensors: OrderedDict[str, dict] = OrderedDict()

    def __len__(self) -> int:
        return int(self.src.size)

    def tensors(self, device: torch.device | str = "cpu") -> dict:
        """``src``, ``dst``, ``offset`` (float) and the group paths as tensors on ``device``."""
        key = str(device)
        if key not in self._tensors:
            self._tensors[key] = {
                "src": torch.from_numpy(self.src).to(device),
                "dst": torch.from_numpy(self.dst).to(device),
                "offset": torch.from_numpy(self.offset.astype(np.float32)).to(device),
                "paths": [torch.from_numpy(p).to(device) for _, p in self.groups],
            }
        return self._tensors[key]


@lru_cache(maxsize=4)
def pair_index(size: tuple[int, int], radius: int) -> PairIndex:
    """A cached :class:`PairIndex` (training crops share one size; images repeat sizes)."""
    return PairIndex(size, radius)


def path_affinity(boundary: torch.Tensor, index: PairIndex) -> torch.Tensor:
    """Affinity of every pair from a boundary map: ``1 - max`` of ``B`` along its path.

    ``boundary`` is (B, h, w) or (B, 1, h, w) with values in [0, 1]; returns (B, P) in
    the pair order of ``index``. Differentiable: the gradient reaches the maximum.
    """
    flat = boundary.reshape(boundary.shape[0], -1)
    if flat.shape[1] != index.size[0] * index.size[1]:
        raise ValueError(f"boundary map of {tuple(boundary.shape[-2:])} pixels does not match the "
                         f"pair index built for {index.size}")
    return 1 - flat.gather(1, path_argmax(flat, index))


def path_argmax(flat: torch.Tensor, index: PairIndex) -> torch.Tensor:
    """For every pair, the flat index of the pixel of largest value on its path, (B, P).

    Found without autograd; :func:`path_affinity` then gathers just those pixels, so the
    backward pass scatters one value per pair instead of one per path pixel.
    """
    paths = index.tensors(flat.device)["paths"]
    if not paths:
        return torch.zeros(flat.shape[0], 0, dtype=torch.int64, device=flat.device)
    out = []
    with torch.no_grad():
        for p in paths:
            vals = flat.index_select(1, p.reshape(-1)).view(flat.shape[0], *p.shape)
            arg = vals.argmax(dim=1, keepdim=True)  # (B, 1, n) position along the path
            out.append(p.expand(flat.shape[0], -1, -1).gather(1, arg)[:, 0])
    return torch.cat(out, dim=1)


def relation_labels(label: torch.Tensor, index: PairIndex) -> dict[str, torch.Tensor]:
    """Inter-pixel relation labels of every pair from label maps (B, h, w) (IRN's dataloader).

    Returns float (B, P) masks: ``bg_pos`` (both pixels background), ``fg_pos`` (both
    the same object class), ``neg`` (different labels); pairs touching 255 are in none.
    """
    t = index.tensors(label.device)
    flat = label.reshape(label.shape[0], -1)
    a, b = flat[:, t["src"]], flat[:, t["dst"]]
    valid = (a != IGNORE) & (b != IGNORE)
    same = (a == b) & valid
    return {"bg_pos": (same & (a == 0)).float(), "fg_pos": (same & (a > 0)).float(),
            "neg": (~(a == b) & valid).float()}
