"""ESOLNet: the one network every ESOL stage shares (docs/method.md, "Network").

Forward by stage::

    classifier: f -> conv_e -> ReLU -> conv_s -> ReLU -> GAP -> w
    expansion:  f -> ES(conv_e)  -> ReLU -> clip -> conv_s -> ReLU -> GAP -> w
    shrinkage:  f -> ES (frozen) -> ReLU -> clip -> SS(conv_s) -> ReLU -> GAP -> w

``w`` is a bias-free 1x1 conv after global average pooling, so the logits equal the
spatial mean of the class maps ``w_c^T F`` (CAM, Eq. 2). In the Expansion and
Shrinkage stages the layers before the one being trained run under ``no_grad``
("the loss gradients are not allowed to back-propagate to the backbone", section 4.1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from esol.models.backbones import build_backbone, family_label
from esol.models.deform import DEFORM_IMPLS, DeformableSampler, feature_clip

STAGES = ("classifier", "expansion", "shrinkage")


@dataclass(frozen=True)
class Arch:
    """Everything needed to rebuild a network exactly; stored in every checkpoint."""

    num_classes: int
    backbone: str = "resnet"  # model.backbone.name (esol.models.backbones.FAMILIES)
    depth: int = 50  # ResNet's only
    kernel_size: int = 3
    frozen_bn: bool = True
    frozen_stages: int = 2  # IRN: conv1, layer1 and layer2 get no gradient
    deformable_e: bool = False
    deformable_s: bool = False
    clip_beta: float | None = None
    stage: str = "classifier"


class ESOLNet(nn.Module):
    """Backbone ``f``, the extra layers ``conv_e``/``conv_s``, and classifier ``w``."""

    def __init__(self, arch: Arch, pretrained: str = "none", deform_impl: str = "sampled") -> None:
        """Build ``arch``; ``pretrained`` ('none', 'imagenet' or a path) initialises ``f``.

        ``deform_impl`` computes the samplers (``"sampled"`` or ``"torchvision"``, see
        :class:`DeformableSampler`); it is not part of ``arch``: both give the same network.
        """
        super().__init__()
        self.deform_impl = deform_impl
        if arch.kernel_size not in (1, 3):
            raise ValueError(f"model.kernel_size must be 1 or 3, got {arch.kernel_size}")
        self.backbone = build_backbone(arch.backbone, depth=arch.depth, pretrained=pretrained,
                                       frozen_bn=arch.frozen_bn, frozen_stages=arch.frozen_stages)
        c, k = self.backbone.out_channels, arch.kernel_size
        self.conv_e: nn.Module = nn.Conv2d(c, c, k, padding=k // 2)
        self.conv_s: nn.Module = nn.Conv2d(c, c, k, padding=k // 2)
        for conv in (self.conv_e, self.conv_s):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        self.classifier = nn.Conv2d(c, arch.num_classes, 1, bias=False)
        if arch.deformable_e:
            self.conv_e = DeformableSampler(self.conv_e, deform_impl)
        if arch.deformable_s:
            self.conv_s = DeformableSampler(self.conv_s, deform_impl)
        self.arch = arch

    @property
    def backbone_label(self) -> str:
        """``ResNet-50``, ``EfficientNet-Lite0``: for logs and reports."""
        return family_label(self.arch.backbone, self.arch.depth)

    def set_deform_impl(self, impl: str) -> ESOLNet:
        """Compute the samplers, present and future, with ``impl`` (same results)."""
        if impl not in DEFORM_IMPLS:
            raise ValueError(f"deformable layer implementation must be one of {DEFORM_IMPLS}, "
                             f"got {impl!r}")
        self.deform_impl = impl
        for m in self.modules():
            if isinstance(m, DeformableSampler):
                m.impl = impl
        return self

    # -- forward ---------------------------------------------------------------

    @property
    def _frozen_upto(self) -> str:
        """How much of the network is a fixed feature extractor in this stage."""
        return {"classifier": "none", "expansion": "backbone", "shrinkage": "clip"}[self.arch.stage]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``F``: the feature map the classifier pools, (B, C, H/16, W/16): the backbone's
        last level (any family at output stride 16) through ``conv_e`` and ``conv_s``."""
        grad = torch.is_grad_enabled()
        frozen = self._frozen_upto
        with torch.set_grad_enabled(grad and frozen == "none"):
            f = self.backbone(x)
        with torch.set_grad_enabled(grad and frozen != "clip"):
            e = F.relu(self.conv_e(f))
            if self.arch.clip_beta is not None:
                e = feature_clip(e, self.arch.clip_beta)
        return F.relu(self.conv_s(e))

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """``w_c^T F`` for every class, before ReLU: (B, K, H/16, W/16)."""
        return F.conv2d(self.features(x), self.classifier.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image-level logits (B, K) = GAP of the class maps (linear, so GAP commutes)."""
        return self.class_maps(x).mean(dim=(2, 3))

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised CAM, ``ReLU(w_c^T F)`` (Eq. 2 before the max normalisation)."""
        return F.relu(self.class_maps(x))

    # -- stages ----------------------------------------------------------------

    def to_expansion(self, deformable: bool, clip_beta: float | None) -> list[nn.Parameter]:
        """Enter the Expansion stage: ``conv_e`` becomes the expansion sampler (ES).

        Returns the parameters to train: the ES offset branch alone (none when the
        variant has no expansion offsets).
        """
        if self.arch.stage != "classifier":
            raise RuntimeError(f"to_expansion on a network in stage {self.arch.stage!r}")
        if deformable:
            self.conv_e = DeformableSampler(self.conv_e, self.deform_impl)
        self.arch = replace(self.arch, stage="expansion", deformable_e=deformable,
                            clip_beta=clip_beta)
        return self._train_only(self.conv_e.offset.parameters() if deformable else ())

    def to_shrinkage(self, deformable: bool) -> list[nn.Parameter]:
        """Enter the Shrinkage stage: ``conv_s`` becomes the shrinkage sampler (SS).

        Returns the parameters to train: the SS offset branch, or, for the ablation
        without it (Table 6, "w/o DT_s"), the regular ``conv_s`` weights.
        """
        if self.arch.stage == "shrinkage":
            raise RuntimeError("to_shrinkage on a network already in the Shrinkage stage")
        if deformable:
            self.conv_s = DeformableSampler(self.conv_s, self.deform_impl)
            params = self.conv_s.offset.parameters()
        else:
            params = self.conv_s.parameters()
        self.arch = replace(self.arch, stage="shrinkage", deformable_s=deformable)
        return self._train_only(params)

    def _train_only(self, params) -> list[nn.Parameter]:
        self.requires_grad_(False)
        params = list(params)
        for p in params:
            p.requires_grad_(True)
        return params

    def classifier_param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone, new layers) trainable parameters, for IRN's 1x / 10x learning rates."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        new = [p for m in (self.conv_e, self.conv_s, self.classifier) for p in m.parameters()
               if p.requires_grad]
        return backbone, new

    # -- persistence -----------------------------------------------------------

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        return {"arch": asdict(self.arch), "model": self.state_dict(), **extra}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], deform_impl: str = "sampled") -> ESOLNet:
        net = cls(Arch(**ckpt["arch"]), deform_impl=deform_impl)
        net.load_state_dict(ckpt["model"])
        return net
