"""Finite-value checks: a diverged stage stops where it diverged, naming itself.

A training run can diverge without a NaN loss (``classifier.lr: 1e6`` ends at a loss of
1e19 with finite weights whose CAMs are NaN). Every output that later stages read is
checked here before it is written: trained weights at the end of :func:`esol.engine.fit`,
every CAM, boundary map and prediction. A check names the stage at fault (the stage that
trained the network, not the one that met the NaN) and the config keys to change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from esol.utils import TrainingError

# What to lower when a stage diverges: its learning rate and the weights of its loss.
ADVICE = {
    "classifier": "classifier.lr (or classifier.new_layer_lr_mult)",
    "expansion": "expansion.lr or expansion.alpha",
    "shrinkage": "shrinkage.lr, shrinkage.gamma or shrinkage.mu",
    "irn": "irn.train.lr (or irn.train.displacement_lr_mult)",
    "deeplab": "segmentation.train.lr",
}


def advice(stage: str) -> str:
    """The config keys that tame a diverged ``stage`` (``deeplab[gt]`` counts as deeplab)."""
    key = stage.split("[", 1)[0]
    return ADVICE.get(key, f"the {stage} stage's learning rate")


def _last_loss(history: Sequence[Mapping[str, float]] | None) -> str:
    if not history or "loss" not in history[-1]:
        return ""
    return f"; its last epoch's mean loss was {history[-1]['loss']:.3g}"


def check_finite_weights(module: torch.nn.Module, stage: str,
                         history: Sequence[Mapping[str, float]] | None = None) -> None:
    """Raise :class:`TrainingError` when a trained network holds NaN or inf.

    Checked at the end of training, before the checkpoint is written, so no later stage
    ever reads diverged weights.
    """
    bad = [name for name, t in module.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise TrainingError(
            f"{stage}: training diverged: {len(bad)} weight tensors hold NaN or inf "
            f"(e.g. {bad[0]}){_last_loss(history)}. No checkpoint written; lower {advice(stage)}")


def check_finite_map(values: np.ndarray | torch.Tensor, what: str, stage: str,
                     source: str) -> None:
    """Raise :class:`TrainingError` when a map computed from a network holds NaN or inf.

    ``what`` names the map (e.g. "CAM of image 2007_000032"), ``stage`` the stage that
    trained the network (the one at fault) and ``source`` its checkpoint.
    """
    finite = (torch.isfinite(values).all().item() if torch.is_tensor(values)
              else bool(np.isfinite(values).all()))
    if not finite:
        raise TrainingError(
            f"{what} holds NaN or inf: the {stage} stage diverged ({source}). Nothing of this "
            f"output is kept; retrain the {stage} stage with a lower {advice(stage)}")
