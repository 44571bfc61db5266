"""The samplers of ESOL: a trained regular conv turned deformable (paper Eq. 3-4)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import deform_conv2d

DEFORM_IMPLS = ("gather", "torchvision")


def deform_conv2d_gather(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None = None, stride: tuple[int, int] = (1, 1),
                         padding: tuple[int, int] = (0, 0),
                         dilation: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """``torchvision.ops.deform_conv2d`` (one offset group, no mask) as sampling + one GEMM.

    Eq. 4, ``F'(p0) = sum_n w(p_n) x(p0 + p_n + dp_n)``, split in two: bilinear sampling
    of ``x`` at the ``k*k`` displaced positions of every output pixel (zero outside the
    image, as torchvision's ``bilinear_interpolate``), then a single matrix product of
    the sampled columns with the kernel. The samples are gathered as whole channel
    vectors from a channels-last copy of ``x`` (one row per pixel), so the GEMM runs on
    the BLAS / tensor cores in the autocast dtype, where torchvision's operator computes
    im2col element by element in float32. Positions are built in pixel units, so a zero
    offset lands exactly on a pixel and ``floor`` picks the same corner as torchvision:
    the offset gradient there is the same one-sided difference. Gradients to ``x``,
    ``offset``, ``weight`` and ``bias`` come from autograd.
    """
    b, c, h, w = x.shape
    cout, cin, kh, kw = weight.shape
    if cin != c:
        raise ValueError(f"deform_conv2d_gather: weight expects {cin} input channels, x has {c}")
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    k = kh * kw
    if offset.shape != (b, 2 * k, ho, wo):
        raise ValueError(f"deform_conv2d_gather: offset shape {tuple(offset.shape)}, expected "
                         f"{(b, 2 * k, ho, wo)}")
    # Sampling positions, (B, Ho, Wo, K): output pixel * stride - padding + kernel tap + offset.
    off = offset.view(b, k, 2, ho, wo).permute(0, 3, 4, 1, 2)
    dev = offset.device
    tap_y = (torch.arange(kh, device=dev) * dh).repeat_interleave(kw)
    tap_x = (torch.arange(kw, device=dev) * dw).repeat(kh)
    py = off[..., 0] + (torch.arange(ho, device=dev) * sh - ph).view(ho, 1, 1) + tap_y
    px = off[..., 1] + (torch.arange(wo, device=dev) * sw - pw).view(1, wo, 1) + tap_x
    y0, x0 = torch.floor(py), torch.floor(px)
    fy, fx = py - y0, px - x0
    y0, x0 = y0.long(), x0.long()
    base = (torch.arange(b, device=dev) * (h * w)).view(b, 1, 1, 1)
    rows = x.permute(0, 2, 3, 1).reshape(b * h * w, c)  # one row of C channels per pixel
    cols = None
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            idx = torch.where(inside, base + yy * w + xx, 0)
            weight_n = wy * wx * inside  # float32 even when rows are bfloat16
            v = rows.index_select(0, idx.reshape(-1)).view(b, ho, wo, k, c) * weight_n[..., None]
            cols = v if cols is None else cols + v
    # (B*Ho*Wo, K*C) @ (K*C, Cout): the kernel reordered tap-major to match the columns.
    kernel = weight.permute(0, 2, 3, 1).reshape(cout, k * c)
    out = torch.matmul(cols.view(b * ho * wo, k * c), kernel.t())
    if bias is not None:
        out = out + bias
    return out.view(b, ho, wo, cout).permute(0, 3, 1, 2)



class DeformableSampler(nn.Module):
    """``F'(p0) = sum_n w(p_n) x(p0 + p_n + dp_n)`` with ``w`` from a trained conv (Eq. 4).

    The kernel and bias are copied from ``conv`` and frozen; only the **offset branch**
    (a conv with the same kernel size, stride, padding and dilation, ``2*k*k`` outputs,
    zero-initialised) learns. With zero offsets this computes exactly ``conv`` (Eq. 3),
    so the swap does not change the network it is made in. Offsets are in feature-map
    pixels, ordered ``(dy, dx)`` per kernel point as ``torchvision.ops.deform_conv2d``
    expects. The last offsets computed are kept in ``last_offset`` (detached) for
    monitoring.

    ``impl`` picks how Eq. 4 is computed: ``"gather"`` (:func:`deform_conv2d_gather`,
    sampling + one GEMM, the GEMM in the autocast dtype) or ``"torchvision"``
    (``torchvision.ops.deform_conv2d`` in float32, the reference the tests compare
    against). Both give the same function; only speed and rounding differ.
    """

    def __init__(self, conv: nn.Conv2d, impl: str = "gather") -> None:
        super().__init__()
        if conv.groups != 1:
            raise ValueError("DeformableSampler wraps ungrouped convolutions only")
        if impl not in DEFORM_IMPLS:
            raise ValueError(f"deformable layer implementation must be one of {DEFORM_IMPLS}, "
                             f"got {impl!r}")
        self.impl = impl
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
        # Offsets are learned in full precision: the offset branch runs in the
        # parameters' dtype even under autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            offset = self.offset(x.to(self.offset.weight.dtype))
        self.last_offset = offset.detach()
        if self.impl == "gather":
            # Sampling in float32 (positions need it); the GEMM follows autocast.
            return deform_conv2d_gather(x, offset, self.weight, self.bias, stride=self.stride,
                                        padding=self.padding, dilation=self.dilation)
        # deform_conv2d has no reduced-precision CPU kernel.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return deform_conv2d(x.to(self.weight.dtype), offset, self.weight, self.bias,
                                 stride=self.stride, padding=self.padding, dilation=self.dilation)


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
