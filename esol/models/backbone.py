"""ResNet feature extractor ``f`` at output stride 16, as IRN builds it.

torchvision's ResNet with the last stage's stride set to 1 (strides (2, 2, 2, 1), no
dilation, as IRN's ``resnet50(strides=(2, 2, 2, 1))``), BatchNorm optionally fixed
(:class:`FixedBatchNorm`, IRN's ``net/resnet50.py``: running statistics never change,
the affine weight and bias stay parameters), and the stem plus the first
``frozen_stages`` residual stages excluded from training. IRN's classifier
(``net/resnet50_cam.py``) runs ``x = self.stage2(x).detach()``: conv1, layer1 and
layer2 get no gradient, which is ``frozen_stages = 2``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from esol.utils import ConfigError

log = logging.getLogger(__name__)

DEPTHS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101"}
_WEIGHTS = {18: "ResNet18_Weights", 34: "ResNet34_Weights", 50: "ResNet50_Weights",
            101: "ResNet101_Weights"}


class FixedBatchNorm(nn.BatchNorm2d):
    """IRN's ``FixedBatchNorm`` (``net/resnet50.py``): normalises with the running
    statistics in training and eval mode alike, so they never change; ``weight`` and
    ``bias`` remain parameters and learn wherever their stage trains (torchvision's
    ``FrozenBatchNorm2d`` would fix them too)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


class ResNetBackbone(nn.Module):
    """``f(x; theta_f)``: ResNet stages up to layer4 at output stride 16.

    ``forward(x)`` returns the last feature map; ``forward_levels(x)`` returns the
    outputs of the stem and the four stages (strides 4, 4, 8, 16, 16), for refinement
    networks that need multi-level features.
    """

    def __init__(self, depth: int = 50, pretrained: str = "none", frozen_bn: bool = True,
                 frozen_stages: int = 2) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ConfigError(f"model.backbone.depth must be one of {sorted(DEPTHS)}, got {depth}")
        norm = FixedBatchNorm if frozen_bn else nn.BatchNorm2d
        net = getattr(torchvision.models, DEPTHS[depth])(weights=None, norm_layer=norm)
        if pretrained != "none":
            load_pretrained(net, depth, pretrained)
        # Output stride 16: the first block of layer4 keeps the resolution.
        block = net.layer4[0]
        strided = block.conv2 if hasattr(block, "conv3") else block.conv1  # Bottleneck vs Basic
        strided.stride = (1, 1)
        block.downsample[0].stride = (1, 1)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_channels = 512 * (4 if depth >= 50 else 1)
        self.depth = depth
        self.frozen_stages = frozen_stages
        if not 0 <= frozen_stages <= 4:
            raise ConfigError(f"model.backbone.frozen_stages must be 0..4, got {frozen_stages}")
        # frozen_stages = k > 0 freezes the stem and layer1..layer{k}: parameters without
        # gradient are what IRN's detach() after layer2 amounts to (k = 2).
        stages = [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]
        for stage in stages[: frozen_stages + 1 if frozen_stages > 0 else 0]:
            for p in stage.parameters():
                p.requires_grad_(False)

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
