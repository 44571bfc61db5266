"""Losses of ESOL (paper Eq. 1, 5 and 6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label soft-margin loss, Eq. 1 with its typo corrected (docs/method.md, "Losses").

    ``-1/C sum_c [y_c log sigmoid(z_c) + (1 - y_c) log sigmoid(-z_c)]``, averaged over
    the batch: the sigmoid cross-entropy CAM and IRN train with.
    """
    return F.multilabel_soft_margin_loss(logits, labels)


def localization_maps(class_maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``P_c = ReLU(w_c^T F) / (max_{h,w} ReLU(w_c^T F) + eps)``, shape (B, K, H, W)."""
    cam = F.relu(class_maps)
    return cam / (cam.amax(dim=(2, 3), keepdim=True) + eps)


def area_loss(class_maps: torch.Tensor, labels: torch.Tensor, present_only: bool = True,
              eps: float = 1e-5) -> torch.Tensor:
    """``L_area`` of Eq. 6: the mean over classes of ``S_c = mean_{h,w} P_c``.

    The paper averages over all ``C`` classes; by default (``present_only``) this
    averages over the classes in each image's label, since an absent class has no
    object to shrink (docs/method.md, "Losses"). The result is averaged over the
    batch; images without a present class contribute nothing.
    """
    s = localization_maps(class_maps, eps).mean(dim=(2, 3))  # (B, K): S_c per image
    if not present_only:
        return s.mean()
    weights = labels.to(s.dtype)
    per_image = (s * weights).sum(1) / weights.sum(1).clamp(min=1)
    has_any = (weights.sum(1) > 0).to(s.dtype)
    return (per_image * has_any).sum() / has_any.sum().clamp(min=1)
