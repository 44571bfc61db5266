"""The ``resnet`` backbone family: feature extractor ``f`` at output stride 16, as IRN builds it.

torchvision's ResNet with the last stage's stride set to 1 (strides (2, 2, 2, 1), no
dilation, as IRN's ``resnet50(strides=(2, 2, 2, 1))``), BatchNorm optionally fixed
(:class:`FixedBatchNorm`, IRN's ``net/resnet50.py``: running statistics never change,
the affine weight and bias stay parameters), and the stem plus the first
``frozen_stages`` residual stages excluded from training. IRN's classifier
(``net/resnet50_cam.py``) runs ``x = self.stage2(x).detach()``: conv1, layer1 and
layer2 get no gradient, which is ``frozen_stages = 2``. Output stride 8 (DeepLab-v2):
layer3 and layer4 dilated by 2 and 4 instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from esol.models.backbones import FixedBatchNorm, freeze_stages
from esol.utils import ConfigError

__all__ = ["DEPTHS", "FixedBatchNorm", "ResNetBackbone", "dilate_stage", "load_pretrained"]

log = logging.getLogger(__name__)

DEPTHS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101"}
_WEIGHTS = {18: "ResNet18_Weights", 34: "ResNet34_Weights", 50: "ResNet50_Weights",
            101: "ResNet101_Weights"}


def dilate_stage(stage: nn.Sequential, dilation: int) -> None:
    """Make a ResNet stage keep its input resolution, with dilated 3x3 convolutions.

    The strided convolution (BasicBlock ``conv1``, Bottleneck ``conv2``) and the
    shortcut projection get stride 1; every 3x3 convolution gets ``dilation`` and the
    same padding, so sizes are unchanged (deeplab-pytorch's ``_ResBlock(..., stride=1,
    dilation=d)``; all blocks, as the Caffe model, where torchvision's
    ``replace_stride_with_dilation`` keeps the first block undilated and refuses
    BasicBlocks).
    """
    for block in stage:
        for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d)):
            conv.stride = (1, 1)
            if conv.kernel_size == (3, 3):
                conv.dilation = (dilation, dilation)
                conv.padding = (dilation, dilation)


class ResNetBackbone(nn.Module):
    """``f(x; theta_f)``: ResNet stages up to layer4, a member of the backbone family
    (:class:`esol.models.backbones.Backbone`).

    ``forward(x)`` returns the last feature map; ``forward_levels(x)`` returns the
    outputs of the stem and the four stages (strides 4, 4, 8, 16, 16 at output stride
    16; 4, 4, 8, 8, 8 at output stride 8, layer3 and layer4 dilated by 2 and 4 as
    DeepLab-v2).
    """

    family = "resnet"

    def __init__(self, depth: int = 50, pretrained: str = "none", frozen_bn: bool = True,
                 frozen_stages: int = 2, output_stride: int = 16) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ConfigError(f"model.backbone.depth must be one of {sorted(DEPTHS)}, got {depth}")
        norm = FixedBatchNorm if frozen_bn else nn.BatchNorm2d
        net = getattr(torchvision.models, DEPTHS[depth])(weights=None, norm_layer=norm)
        if pretrained != "none":
            load_pretrained(net, depth, pretrained)
        if output_stride == 16:  # the first block of layer4 keeps the resolution
            block = net.layer4[0]
            strided = block.conv2 if hasattr(block, "conv3") else block.conv1  # Bottleneck vs Basic
            strided.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        elif output_stride == 8:
            dilate_stage(net.layer3, 2)
            dilate_stage(net.layer4, 4)
        else:
            raise ConfigError(f"ResNet output stride is 16 or 8, got {output_stride}")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)
        e = 4 if depth >= 50 else 1  # Bottleneck's expansion
        self.level_channels = (64, 64 * e, 128 * e, 256 * e, 512 * e)
        self.level_strides = (4, 4, 8, output_stride, output_stride)
        self.out_channels = self.level_channels[-1]
        self.output_stride = output_stride
        self.depth = depth
        self.frozen_stages = frozen_stages
        # frozen_stages = k > 0 freezes the stem and layer1..layer{k}: parameters without
        # gradient are what IRN's detach() after layer2 amounts to (k = 2).
        freeze_stages(self.stages, frozen_stages)

    @property
    def stages(self) -> list[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        x0 = self.stem(x)
        x1 = self.layer1(x0)
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [x0, x1, x2, x3, x4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def load_pretrained(net: nn.Module, depth: int, source: str) -> None:
    """Load ImageNet weights: ``'imagenet'`` through torchvision's weights API, or a file.

    torchvision caches what it downloads under ``$TORCH_HOME/hub/checkpoints``; offline,
    the error says which file to fetch and where to put it. A cached file that does not
    load (truncated download) and a file of another architecture are named as such.
    """
    if source == "imagenet":
        weights = getattr(torchvision.models, _WEIGHTS[depth]).IMAGENET1K_V1
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if cache.is_file():  # torchvision would load it without fetching: say so if it fails
            try:
                state = torch.load(cache, map_location="cpu", weights_only=True)
            except Exception as err:
                raise ConfigError(
                    f"model.backbone.pretrained is 'imagenet' but the cached weights file {cache} "
                    f"does not load ({type(err).__name__}: {str(err).splitlines()[0]}); it is "
                    f"truncated or corrupt. Delete it and fetch {weights.url} again.") from None
            source = str(cache)
        else:
            state = None
        try:
            if state is None:
                state = weights.get_state_dict(progress=False, check_hash=False)
        except Exception as err:  # urllib/HTTP/SSL errors differ by platform
            raise ConfigError(
                f"model.backbone.pretrained is 'imagenet' but torchvision could not fetch "
                f"{weights.url} ({type(err).__name__}: {err}). On a machine with internet, "
                f"download that file and either copy it to {cache} or set "
                f"model.backbone.pretrained to its path.") from None
    else:
        path = Path(os.path.expanduser(source))
        if not path.is_file():
            raise ConfigError(f"model.backbone.pretrained: weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(f"model.backbone.pretrained: cannot load {path}: {err}") from None
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
        state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = net.state_dict()
    wrong = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items()
             if k in expected and hasattr(v, "shape") and tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k, got, want = wrong[0]
        raise ConfigError(
            f"model.backbone.pretrained: {source} is not a ResNet-{depth} (model.backbone.depth): "
            f"{len(wrong)} tensors have other shapes, e.g. {k} is {list(got)} where ResNet-{depth} "
            f"has {list(want)}")
    missing, unexpected = net.load_state_dict(state, strict=False)
    # BatchNorm's step counter is absent from older weight files and unused when frozen.
    missing = [k for k in missing
               if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    if missing:
        raise ConfigError(f"model.backbone.pretrained ({source}) lacks {len(missing)} ResNet-{depth} "
                          f"tensors, e.g. {missing[:3]}: is it a ResNet-{depth} state dict?")
    if unexpected:
        log.warning("pretrained weights: ignored %d unexpected tensors (e.g. %s)",
                    len(unexpected), unexpected[:3])
    log.info("loaded pretrained ResNet-%d weights from %s", depth, source)
