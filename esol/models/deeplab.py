"""DeepLab-v2 (Chen et al., TPAMI 2018), the segmentation network of the paper's Table 3.

As kazuto1011/deeplab-pytorch builds it (``libs/models/deeplabv2.py``, ``msc.py``):

* a backbone of the family (:mod:`esol.models.backbones`, ``segmentation.model.name``)
  at **output stride 8**: ResNet's last two stages keep their resolution (stride 1) and
  every 3x3 convolution in them is dilated, by 2 in ``layer3`` and by 4 in ``layer4``
  (:func:`esol.models.backbone.dilate_stage`); EfficientNet-Lite0 does the same to its
  last two stride-2 blocks and the depthwise convolutions after them (2, then 4);
* **ASPP**: four parallel 3x3 convolutions from the backbone features straight to the
  class scores, dilation (= padding) 6, 12, 18 and 24, initialised N(0, 0.01) with
  zero bias, **summed**;
* optional frozen BatchNorm: statistics and affine parameters fixed, as the
  reference (torchvision's ``FrozenBatchNorm2d`` for ResNet, whose state-dict names
  the checkpoints keep; EfficientNet's BatchNorm fixed and out of the optimiser);
  without pretrained weights there are none to freeze, see docs/method.md;
* optional **MSC** training: the image at scale 1 and at each extra scale (0.5, 0.75)
  goes through the network; the outputs of the extra scales are resized to the
  full-scale logits and a pixel-wise max is taken. Training supervises all of them
  (:meth:`DeepLabV2.msc_logits`); inference uses the max.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from esol.models.backbone import DEPTHS, dilate_stage, load_pretrained
from esol.models.backbones import FAMILIES, build_backbone, family_label
from esol.utils import ConfigError

__all__ = ["ASPP", "ASPP_RATES", "DeepLabArch", "DeepLabV2", "dilate_stage"]

ASPP_RATES = (6, 12, 18, 24)


@dataclass(frozen=True)
class DeepLabArch:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    num_classes: int  # including background
    depth: int = 101  # ResNet's only
    backbone: str = "resnet"  # the family (segmentation.model.name)
    frozen_bn: bool = True
    rates: tuple[int, ...] = ASPP_RATES
    msc_scales: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "rates", tuple(int(r) for r in self.rates))
        object.__setattr__(self, "msc_scales", tuple(float(s) for s in self.msc_scales))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling of DeepLab-v2: parallel dilated 3x3 convs, summed."""

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = ASPP_RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in rates)
        for conv in self.branches:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class DeepLabV2(nn.Module):
    """Backbone (output stride 8) + ASPP. ``forward`` gives logits at the input's size."""

    def __init__(self, arch: DeepLabArch, pretrained: str = "none") -> None:
        """Build ``arch``; ``pretrained`` ('none', 'imagenet' or a path) initialises the backbone."""
        super().__init__()
        if arch.backbone not in FAMILIES:
            raise ConfigError(f"segmentation.model.name must be one of {list(FAMILIES)}, "
                              f"got {arch.backbone!r}")
        if arch.backbone == "resnet":
            # torchvision's ResNet with FrozenBatchNorm2d, its stages at the top level: the
            # state-dict names of deeplab-pytorch and of this project's checkpoints.
            if arch.depth not in DEPTHS:
                raise ConfigError(f"segmentation.model.depth must be one of {sorted(DEPTHS)}, "
                                  f"got {arch.depth}")
            norm = FrozenBatchNorm2d if arch.frozen_bn else nn.BatchNorm2d
            net = getattr(torchvision.models, DEPTHS[arch.depth])(weights=None, norm_layer=norm)
            if pretrained != "none":
                load_pretrained(net, arch.depth, pretrained)
            dilate_stage(net.layer3, 2)
            dilate_stage(net.layer4, 4)
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
            self.layer1, self.layer2, self.layer3, self.layer4 = (
                net.layer1, net.layer2, net.layer3, net.layer4)
            channels = 512 * (4 if arch.depth >= 50 else 1)
        else:
            self.backbone = build_backbone(arch.backbone, pretrained=pretrained,
                                           frozen_bn=arch.frozen_bn, output_stride=8)
            if arch.frozen_bn:  # as FrozenBatchNorm2d: the affine parameters are fixed too
                for m in self.backbone.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.requires_grad_(False)
            channels = self.backbone.out_channels
        self.aspp = ASPP(channels, arch.num_classes, arch.rates)
        self.arch = arch

    @property
    def backbone_modules(self) -> list[nn.Module]:
        if self.arch.backbone == "resnet":
            return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]
        return [self.backbone]

    @property
    def backbone_label(self) -> str:
        return family_label(self.arch.backbone, self.arch.depth)

    # -- forward ---------------------------------------------------------------

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features at output stride 8: (B, C, ceil(H/8), ceil(W/8))."""
        if self.arch.backbone != "resnet":
            return self.backbone(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))

    def base_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of one scale at stride 8: ASPP over the backbone features."""
        return self.aspp(self.features(x))

    def msc_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stride-8 logits at scale 1, at each MSC scale, and their pixel-wise max.

        Without MSC scales this is ``[base_logits(x)]``. Each extra scale resizes the
        input to ``int(s * H) x int(s * W)`` (bilinear, as deeplab-pytorch); its logits
        are resized to the scale-1 logits for the max.
        """
        full = self.base_logits(x)
        if not self.arch.msc_scales:
            return [full]
        pyramid = []
        for s in self.arch.msc_scales:
            size = [max(1, int(s * d)) for d in x.shape[2:]]
            pyramid.append(self.base_logits(F.interpolate(x, size=size, mode="bilinear",
                                                          align_corners=False)))
        resized = [F.interpolate(p, size=full.shape[2:], mode="bilinear", align_corners=False)
                   for p in pyramid]
        return [full, *pyramid, torch.stack([full, *resized]).amax(dim=0)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K+1, H, W): the (MSC max) stride-8 scores, bilinearly upsampled."""
        logits = self.msc_logits(x)[-1]
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)

    # -- training --------------------------------------------------------------

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by learning-rate multiplier, as deeplab-pytorch's ``get_params``.

        ``backbone`` (1x, weight decay): every trainable backbone parameter (the conv
        weights; BatchNorm's affine parameters too when BatchNorm trains);
        ``aspp_weight`` (10x, weight decay); ``aspp_bias`` (20x, no weight decay).
        """
        backbone = [p for m in self.backbone_modules for p in m.parameters() if p.requires_grad]
        return {"backbone": backbone,
                "aspp_weight": [c.weight for c in self.aspp.branches],
                "aspp_bias": [c.bias for c in self.aspp.branches]}

    # -- persistence -----------------------------------------------------------

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        return {"arch": asdict(self.arch), "model": self.state_dict(), **extra}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> DeepLabV2:
        net = cls(DeepLabArch(**ckpt["arch"]))
        net.load_state_dict(ckpt["model"])
        return net
