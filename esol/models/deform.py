"""The samplers of ESOL: a trained regular conv turned deformable (paper Eq. 3-4)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import deform_conv2d


class DeformableSampler(nn.Module):
    """``F'(p0) = sum_n w(p_n) x(p0 + p_n + dp_n)`` with ``w`` from a trained conv (Eq. 4).

    The kernel and bias are copied from ``conv`` and frozen; only the **offset branch**
    (a conv with the same kernel size, stride, padding and dilation, ``2*k*k`` outputs,
    zero-initialised) learns. With zero offsets this computes exactly ``conv`` (Eq. 3),
    so the swap does not change the network it is made in. Offsets are in feature-map
    pixels, ordered ``(dy, dx)`` per kernel point as ``torchvision.ops.deform_conv2d``
    expects. The last offsets computed are kept in ``last_offset`` (detached) for
    monitoring.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.groups != 1:
            raise ValueError("DeformableSampler wraps ungrouped convolutions only")
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.kernel_size = conv.kernel_size
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = (nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
                     if conv.bias is not None else None)
        kh, kw = conv.kernel_size
        self.offset = nn.Conv2d(conv.in_channels, 2 * kh * kw, conv.kernel_size,
                                stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                                device=conv.weight.device, dtype=conv.weight.dtype)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.last_offset: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Offsets are learned in full precision, and deform_conv2d has no reduced-precision
        # CPU kernel: run this layer in the parameters' dtype even under autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.to(self.weight.dtype)
            offset = self.offset(x)
            self.last_offset = offset.detach()
            return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride,
                                 padding=self.padding, dilation=self.dilation)


def offset_magnitude(offset: torch.Tensor) -> torch.Tensor:
    """Per-kernel-point displacement length ``sqrt(dy^2 + dx^2)`` in feature pixels.

    ``offset`` is ``(B, 2*k*k, H, W)``; the result is ``(B, k*k, H, W)``.
    """
    b, c, h, w = offset.shape
    pairs = offset.reshape(b, c // 2, 2, h, w)
    return pairs.pow(2).sum(2).sqrt()


def feature_clip(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Feature clipping, Eq. 7: per image and channel, ``min(x, beta * max_{h,w} x)``."""
    cap = beta * x.amax(dim=(2, 3), keepdim=True)
    return torch.minimum(x, cap)
