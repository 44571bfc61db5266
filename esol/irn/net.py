"""The inter-pixel relation network (IRN, Ahn et al. CVPR 2019, section 3.1; ``net/resnet50_irn.py``).

A frozen feature extractor of the backbone family (:mod:`esol.models.backbones`) feeds
two branches with the features of all five levels of its ``forward_levels`` (ResNet:
stem and layer1 at stride 4, layer2 at 8, layer3 and layer4 at 16; EfficientNet-Lite0:
2, 4, 8, 16, 16, its stride-2 level average-pooled to stride 4 where ResNet's levels
would be upsampled):

* **class boundary branch**: each level -> 1x1 conv to 32 channels, GroupNorm(4),
  upsampling to stride 4, ReLU; the five are concatenated (160 channels) and a 1x1 conv
  with bias gives the boundary logit map ``B`` at stride 4;
* **displacement field branch**: stem -> 64, layer1 -> 128, layer2/3/4 -> 256 channels
  (1x1 conv, GroupNorm, ReLU; layer3/4 upsampled to stride 8); the stride-8 maps are
  fused (768 -> 256, upsampled to stride 4), fused again with the stride-4 maps
  (448 -> 256) and projected to the 2-channel displacement field ``D``, from which a
  running mean is subtracted at inference (IRN's ``MeanShift``).

As in IRN the backbone runs in eval mode without gradients: only the branches learn.
Channel widths are IRN's; the branch inputs follow the backbone's ``level_channels``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from esol.models.backbones import build_backbone, family_label


@dataclass(frozen=True)
class IRNArch:
    """What rebuilds an IRN exactly; stored in its checkpoint."""

    depth: int = 50
    frozen_bn: bool = True
    backbone: str = "resnet"  # the family (model.backbone.name)


def _unit(cin: int, cout: int, groups: int, stride: int = 1, to: int = 1) -> nn.Sequential:
    """1x1 conv, GroupNorm, resampling from ``stride`` to ``to``, ReLU. Up: bilinear (IRN);
    down (a finer level than IRN's ResNet has): average pooling, ceil mode, so a
    ``ceil(H/2)`` map becomes ``ceil(H/4)`` as the stride-4 levels."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1, bias=False), nn.GroupNorm(groups, cout)]
    if stride > to:
        layers.append(nn.Upsample(scale_factor=stride // to, mode="bilinear", align_corners=False))
    elif stride < to:
        layers.append(nn.AvgPool2d(to // stride, ceil_mode=True))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class MeanShift(nn.Module):
    """Tracks the running mean of the displacement field in training (momentum 0.1) and
    subtracts it at inference, as IRN's ``MeanShift`` (a BatchNorm without scaling)."""

    def __init__(self, channels: int = 2, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                mean = x.detach().mean(dim=(0, 2, 3))
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            return x
        return x - self.running_mean.view(1, -1, 1, 1)


def _crop(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x[..., : like.shape[-2], : like.shape[-1]]


class IRNet(nn.Module):
    """Backbone + class boundary branch + displacement field branch."""

    def __init__(self, arch: IRNArch, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = backbone if backbone is not None else build_backbone(
            arch.backbone, depth=arch.depth, pretrained="none", frozen_bn=arch.frozen_bn)
        if self.backbone.family != arch.backbone:
            raise ValueError(f"IRN arch names backbone {arch.backbone!r}, got a {self.backbone.family!r}")
        self.backbone.requires_grad_(False)
        c, s = self.backbone.level_channels, self.backbone.level_strides
        # Boundary branch: every level to stride 4; displacement: levels 0-1 to 4, 2-4 to 8.
        self.edge = nn.ModuleList([_unit(ci, 32, 4, si, 4) for ci, si in zip(c, s, strict=True)])
        self.edge_out = nn.Conv2d(160, 1, 1, bias=True)
        self.dp = nn.ModuleList([_unit(c[0], 64, 8, s[0], 4), _unit(c[1], 128, 16, s[1], 4)]
                                + [_unit(ci, 256, 16, si, 8) for ci, si in zip(c[2:], s[2:], strict=True)])
        self.dp_fuse8 = _unit(768, 256, 16, 8, 4)
        self.dp_fuse4 = _unit(448, 256, 16)
        self.dp_out = nn.Sequential(nn.Conv2d(256, 2, 1, bias=False), MeanShift(2))

    @property
    def backbone_label(self) -> str:
        return family_label(self.arch.backbone, self.arch.depth)

    def train(self, mode: bool = True) -> IRNet:
        super().train(mode)
        self.backbone.eval()  # statistics and weights of the feature extractor stay fixed
        return self

    def branch_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(boundary branch, displacement branch) parameters: IRN's lr 1x and 10x groups."""
        edge = [*self.edge.parameters(), *self.edge_out.parameters()]
        dp = [*self.dp.parameters(), *self.dp_fuse8.parameters(), *self.dp_fuse4.parameters(),
              *self.dp_out.parameters()]
        return edge, dp

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boundary logits (B, 1, h, w) and displacement field (B, 2, h, w) at stride 4."""
        with torch.no_grad():
            levels = self.backbone.forward_levels(x)
        e = [unit(f) for unit, f in zip(self.edge, levels, strict=True)]
        e = [e[0], e[1]] + [_crop(t, e[1]) for t in e[2:]]
        boundary = self.edge_out(torch.cat(e, dim=1))
        d = [unit(f) for unit, f in zip(self.dp, levels, strict=True)]
        d8 = torch.cat([d[2], _crop(d[3], d[2]), _crop(d[4], d[2])], dim=1)
        d4 = _crop(self.dp_fuse8(d8), d[1])
        disp = self.dp_out(self.dp_fuse4(torch.cat([d[0], d[1], d4], dim=1)))
        return boundary, disp

    @torch.no_grad()
    def boundary_map(self, image: torch.Tensor, pad_to: int | None = None) -> torch.Tensor:
        """``B`` of one normalised image (1, 3, H, W) with its mirror, as IRN's
        ``EdgeDisplacement``: ``sigmoid`` of the mean of both logit maps, (ceil(H/4), ceil(W/4)).

        ``pad_to``: as ``EdgeDisplacement(crop_size=512)``, both images are zero-padded
        (the mean colour after normalisation) at the bottom and right to this size, the
        size of the training crops, so GroupNorm sees statistics like those it was
        trained on; the maps are cropped back before the mirror is flipped. A side
        longer than ``pad_to`` is kept whole (IRN's negative padding would cut it).
        """
        h, w = image.shape[-2:]
        x = torch.cat([image, image.flip(-1)])
        if pad_to is not None:
            x = F.pad(x, [0, max(pad_to - w, 0), 0, max(pad_to - h, 0)])
        logits, _ = self(x)
        logits = logits.float()[..., : (h + 3) // 4, : (w + 3) // 4]  # float32 even under autocast
        return torch.sigmoid(logits[0, 0] / 2 + logits[1, 0].flip(-1) / 2)

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        return {"irn_arch": asdict(self.arch), "model": self.state_dict(), **extra}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> IRNet:
        net = cls(IRNArch(**ckpt["irn_arch"]))
        net.load_state_dict(ckpt["model"])
        return net

