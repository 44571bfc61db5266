"""IRN's training losses (Ahn et al. CVPR 2019, section 3.3; ``step/train_irn.py``).

With ``a`` the affinities of the pairs (``1 - max`` boundary on their path) and the
relation labels of :func:`esol.irn.paths.relation_labels`:

* ``L_pos = (L_bg + L_fg) / 2`` with ``L_bg = sum_{bg_pos} -log(a + eps) / |bg_pos|``
  and ``L_fg`` the same over foreground pairs; ``L_neg = sum_{neg} -log(1 + eps - a) / |neg|``
  (eps = 1e-5; the boundary branch learns to put boundaries between pixels of
  different labels and nowhere inside a region);
* displacement: for a pair of the same object, the field ``D`` satisfies
  ``D(i) - D(j) = x_j - x_i`` when both point to one centroid, so
  ``L_dp_fg = sum_{fg_pos} |D(i) - D(j) - (x_j - x_i)|_1 / (2 |fg_pos|)``; background
  pixels do not move, ``L_dp_bg = sum_{bg_pos} |D(i) - D(j)|_1 / (2 |bg_pos|)``;
* total ``(L_pos + L_neg) / 2 + (L_dp_fg + L_dp_bg) / 2``.

Denominators carry IRN's ``+ 1e-5`` so a batch without one kind of pair adds zero.
"""

from __future__ import annotations

import torch

from esol.irn.paths import PairIndex

EPS = 1e-5


def affinity_losses(aff: torch.Tensor, labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_pos, L_neg)`` from affinities (B, P) and relation labels (B, P)."""
    bg, fg, neg = labels["bg_pos"], labels["fg_pos"], labels["neg"]
    bg_loss = (-bg * torch.log(aff + EPS)).sum() / (bg.sum() + EPS)
    fg_loss = (-fg * torch.log(aff + EPS)).sum() / (fg.sum() + EPS)
    neg_loss = (-neg * torch.log(1 + EPS - aff)).sum() / (neg.sum() + EPS)
    return bg_loss / 2 + fg_loss / 2, neg_loss


def pair_displacement(disp: torch.Tensor, index: PairIndex) -> torch.Tensor:
    """``D(i) - D(j)`` for every pair ``(i, j)`` of ``index``: (B, 2, P) from (B, 2, h, w)."""
    t = index.tensors(disp.device)
    flat = disp.reshape(disp.shape[0], disp.shape[1], -1)
    return flat[:, :, t["src"]] - flat[:, :, t["dst"]]


def displacement_losses(disp: torch.Tensor, index: PairIndex,
                        labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_dp_fg, L_dp_bg)`` from a displacement field (B, 2, h, w) in stride-4 pixels."""
    diff = pair_displacement(disp, index)
    target = index.tensors(disp.device)["offset"].T[None]  # (1, 2, P): x_j - x_i as (dy, dx)
    fg, bg = labels["fg_pos"], labels["bg_pos"]
    fg_loss = ((diff - target).abs() * fg[:, None]).sum() / (2 * fg.sum() + EPS)
    bg_loss = (diff.abs() * bg[:, None]).sum() / (2 * bg.sum() + EPS)
    return fg_loss, bg_loss


def irn_loss(aff: torch.Tensor, disp: torch.Tensor, index: PairIndex,
             labels: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """The total IRN loss and its four terms (for the training log)."""
    pos, neg = affinity_losses(aff, labels)
    dp_fg, dp_bg = displacement_losses(disp, index, labels)
    total = (pos + neg) / 2 + (dp_fg + dp_bg) / 2
    return total, {"pos_aff": pos.item(), "neg_aff": neg.item(), "dp_fg": dp_fg.item(),
                   "dp_bg": dp_bg.item()}
