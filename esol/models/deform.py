"""The samplers of ESOL: a trained regular conv turned deformable (paper Eq. 3-4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

DEFORM_IMPLS = ("sampled", "torchvision")


class _GridSample(torch.autograd.Function):
    """``grid_sample`` (bilinear, zero padding) whose backward looks ``nudge`` ahead.

    Bilinear sampling is not differentiable at whole pixels. torchvision's operator
    (and the Expansion stage, which starts from zero offsets, sits exactly there) takes
    the difference toward the next pixel, the cell that ``floor`` picks. Normalised
    grid coordinates do not map back to whole pixels exactly, so ``grid_sample`` would
    take either side; evaluating its backward a few rounding errors ahead (``nudge``,
    in grid units) always picks the next cell. Within a cell the bilinear derivative is
    linear in the position, so elsewhere this changes the gradient by O(``nudge``).
    """

    @staticmethod
    def forward(ctx, x, grid, nudge):
        ctx.save_for_backward(x, grid, nudge)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @staticmethod
    def backward(ctx, grad):
        x, grid, nudge = ctx.saved_tensors
        need_x, need_grid = ctx.needs_input_grad[:2]
        grad = grad.contiguous()
        gx = ggrid = None
        if need_x:  # at the true positions: the input gradient is continuous there
            gx = torch.ops.aten.grid_sampler_2d_backward(grad, x, grid, 0, 0, False, [True, False])[0]
        if need_grid:
            ggrid = torch.ops.aten.grid_sampler_2d_backward(grad, x, grid + nudge, 0, 0, False,
                                                            [False, True])[1]
        return gx, ggrid, None


def deform_conv2d_sampled(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None = None, stride: tuple[int, int] = (1, 1),
                          padding: tuple[int, int] = (0, 0),
                          dilation: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """``torchvision.ops.deform_conv2d`` (one offset group, no mask) as sampling + one GEMM.

    Eq. 4, ``F'(p0) = sum_n w(p_n) x(p0 + p_n + dp_n)``, split in two: bilinear sampling
    of ``x`` at the ``k*k`` displaced positions of every output pixel with
    ``grid_sample`` (zero outside the map, as torchvision's ``bilinear_interpolate``),
    giving the columns ``(B, C*k*k, Ho*Wo)`` directly, then one batched matrix product
    with the kernel. The sampling runs in float32 (positions need it); the GEMM follows
    autocast (tensor cores in bf16 on a GPU), where torchvision's operator computes
    im2col element by element in float32. Gradients to ``x``, ``offset``, ``weight``
    and ``bias`` come from autograd; at whole-pixel positions the offset gradient is
    torchvision's one-sided difference (see ``_GridSample``).
    """
    b, c, h, w = x.shape
    cout, cin, kh, kw = weight.shape
    if cin != c:
        raise ValueError(f"deform_conv2d_sampled: weight expects {cin} input channels, x has {c}")
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    k = kh * kw
    if offset.shape != (b, 2 * k, ho, wo):
        raise ValueError(f"deform_conv2d_sampled: offset shape {tuple(offset.shape)}, expected "
                         f"{(b, 2 * k, ho, wo)}")
    dtype, dev = offset.dtype, offset.device
    with torch.autocast(device_type=dev.type, enabled=False):
        # Positions in pixels, (B, K, Ho, Wo): output pixel * stride - padding + tap + offset,
        # offsets ordered (dy, dx) per kernel point as torchvision's.
        off = offset.view(b, k, 2, ho, wo)
        tap_y = (torch.arange(kh, device=dev, dtype=dtype) * dh).repeat_interleave(kw).view(k, 1, 1)
        tap_x = (torch.arange(kw, device=dev, dtype=dtype) * dw).repeat(kh).view(k, 1, 1)
        py = off[:, :, 0] + (torch.arange(ho, device=dev, dtype=dtype) * sh - ph).view(ho, 1) + tap_y
        px = off[:, :, 1] + (torch.arange(wo, device=dev, dtype=dtype) * sw - pw) + tap_x
        # grid_sample, align_corners=False: pixel i is at (2i + 1) / size - 1.
        grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1).view(b, k * ho, wo, 2)
        xs = x.to(dtype)
        if torch.is_grad_enabled() and (xs.requires_grad or grid.requires_grad):
            eps = 8 * torch.finfo(dtype).eps * max(h, w)  # pixels; > the round trip's error
            nudge = torch.tensor([2 * eps / w, 2 * eps / h], device=dev, dtype=dtype)
            cols = _GridSample.apply(xs, grid, nudge)
        else:
            cols = F.grid_sample(xs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # (Cout, C*K) @ (B, C*K, Ho*Wo): the columns are channel-major like the kernel's view.
    out = torch.matmul(weight.reshape(cout, c * k), cols.view(b, c * k, ho * wo))
    if bias is not None:
        out = out + bias.view(cout, 1)
    return out.view(b, cout, ho, wo)


class DeformableSampler(nn.Module):
    """``F'(p0) = sum_n w(p_n) x(p0 + p_n + dp_n)`` with ``w`` from a trained conv (Eq. 4).

    The kernel and bias are copied from ``conv`` and frozen; only the **offset branch**
    (a conv with the same kernel size, stride, padding and dilation, ``2*k*k`` outputs,
    zero-initialised) learns. With zero offsets this computes exactly ``conv`` (Eq. 3),
    so the swap does not change the network it is made in. Offsets are in feature-map
    pixels, ordered ``(dy, dx)`` per kernel point as ``torchvision.ops.deform_conv2d``
    expects. The last offsets computed are kept in ``last_offset`` (detached) for
    monitoring.

    ``impl`` picks how Eq. 4 is computed: ``"sampled"`` (:func:`deform_conv2d_sampled`,
    sampling + one GEMM, the GEMM in the autocast dtype) or ``"torchvision"``
    (``torchvision.ops.deform_conv2d`` in float32, the reference the tests compare
    against). Both give the same function; only speed and rounding differ.
    """

    def __init__(self, conv: nn.Conv2d, impl: str = "sampled") -> None:
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
        if self.impl == "sampled":
            # Sampling in float32 (positions need it); the GEMM follows autocast.
            return deform_conv2d_sampled(x, offset, self.weight, self.bias, stride=self.stride,
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
