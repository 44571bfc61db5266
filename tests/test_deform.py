"""The fast deformable layer (sampling + one GEMM) against torchvision's ``deform_conv2d``.

``deform_conv2d_sampled`` must compute the same function as the reference operator,
with the same gradients to the input, the offsets, the kernel and the bias, so that
switching implementation changes speed only (docs/performance.md). Float64 cases agree
to rounding (1e-10); float32 cases to 1e-4 relative (summation order of 4608-term dot
products; seen 5e-7); three optimiser steps of each ESOL stage leave the offset
branches within 1e-4 of their largest weight (seen 4e-6).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from esol.losses import area_loss, classification_loss
from esol.models.deform import DEFORM_IMPLS, DeformableSampler, deform_conv2d_sampled
from esol.models.esol_net import Arch, ESOLNet

F64 = dict(rtol=1e-10, atol=1e-10)


def _case(k: int, stride: int, pad: int, dil: int, scale: float, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = 7, 9
    ho = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
    x = torch.randn(2, 5, h, w, generator=g, dtype=dtype)
    off = torch.randn(2, 2 * k * k, ho, wo, generator=g, dtype=dtype) * scale
    weight = torch.randn(4, 5, k, k, generator=g, dtype=dtype)
    bias = torch.randn(4, generator=g, dtype=dtype)
    kw = dict(stride=(stride, stride), padding=(pad, pad), dilation=(dil, dil))
    return [t.requires_grad_() for t in (x, off, weight, bias)], kw


def _value_and_grads(fn, tensors, kw):
    out = fn(*tensors, **kw)
    # A fixed, non-uniform upstream gradient so that every output element matters.
    probe = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    grads = torch.autograd.grad((out * probe).sum(), tensors)
    return (out, *grads)


@pytest.mark.parametrize("k,stride,pad,dil", [(3, 1, 1, 1), (1, 1, 0, 1), (3, 2, 2, 2), (3, 1, 0, 1)])
@pytest.mark.parametrize("scale", [0.7, 3.0])
def test_sampled_matches_torchvision_value_and_gradients(k, stride, pad, dil, scale):
    # Offsets of a few pixels, many pointing outside the 7x9 map: output and gradients
    # to input, offsets, kernel and bias agree to float64 rounding.
    tensors, kw = _case(k, stride, pad, dil, scale)
    ref = _value_and_grads(deform_conv2d, tensors, kw)
    new = _value_and_grads(deform_conv2d_sampled, tensors, kw)
    for name, a, b in zip(("output", "d/dx", "d/doffset", "d/dweight", "d/dbias"), new, ref):
        torch.testing.assert_close(a, b, **F64, msg=lambda m, n=name: f"{n}: {m}")


def test_sampled_matches_torchvision_in_float32():
    tensors, kw = _case(3, 1, 1, 1, 1.5, dtype=torch.float32)
    for a, b in zip(_value_and_grads(deform_conv2d_sampled, tensors, kw),
                    _value_and_grads(deform_conv2d, tensors, kw)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_zero_offsets_are_the_regular_conv_with_torchvisions_one_sided_gradient(k):
    # Eq. 3 = Eq. 4 at zero offsets. Bilinear sampling is not differentiable at whole
    # pixels; both implementations take the difference toward the next pixel (floor),
    # which matters because the Expansion stage starts from zero offsets.
    tensors, kw = _case(k, 1, k // 2, 1, 0.0)
    x, off, weight, bias = tensors
    new = _value_and_grads(deform_conv2d_sampled, tensors, kw)
    torch.testing.assert_close(new[0], F.conv2d(x, weight, bias, padding=k // 2), **F64)
    torch.testing.assert_close(new[2], _value_and_grads(deform_conv2d, tensors, kw)[2], **F64)
    # float32: grid coordinates do not map back to whole pixels exactly; the backward's
    # nudge (8 float32 epsilons x map size, 9e-6 px here) still takes the same side.
    # Taking the other side would differ by O(1) of the largest gradient; the nudge
    # itself moves it by about 1e-5 of it.
    t32 = [t.detach().float().requires_grad_() for t in tensors]
    ref = _value_and_grads(deform_conv2d, t32, kw)[2]
    torch.testing.assert_close(_value_and_grads(deform_conv2d_sampled, t32, kw)[2], ref,
                               rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_bilinear_sample_by_hand():
    # 1x1 identity kernel, x = 10*row + col on a 3x4 map, offset (dy, dx) = (0.25, 0.5)
    # everywhere: output (i, j) = x(i + 0.25, j + 0.5) = 10 i + 2.5 + j + 0.5 inside;
    # the last column reads half of a zero-padded pixel, the last row a quarter.
    x = (10 * torch.arange(3.0).view(3, 1) + torch.arange(4.0)).view(1, 1, 3, 4)
    off = torch.tensor([0.25, 0.5]).view(1, 2, 1, 1).expand(1, 2, 3, 4)
    out = deform_conv2d_sampled(x, off, torch.ones(1, 1, 1, 1))[0, 0]
    i, j = torch.meshgrid(torch.arange(3.0), torch.arange(4.0), indexing="ij")
    full = 10 * i + 2.5 + j + 0.5
    # Corners beyond the border weigh zero: column 3 loses its dx = 0.5 neighbour, row 2
    # its dy = 0.25 neighbour (weights (1-dy)(1-dx) etc. of the corners inside).
    expected = torch.zeros(3, 4)
    for r in range(3):
        for c in range(4):
            v = 0.0
            for dr, wr in ((0, 0.75), (1, 0.25)):
                for dc, wc in ((0, 0.5), (1, 0.5)):
                    if r + dr < 3 and c + dc < 4:
                        v += wr * wc * (10 * (r + dr) + c + dc)
            expected[r, c] = v
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[:2, :3], full[:2, :3])


def test_offsets_far_outside_read_zero_padding_as_torchvision():
    # Every sample a whole map away: all corners outside, output = bias; a half-pixel
    # step past the border keeps half of the edge pixel (torchvision's bilinear_interpolate).
    tensors, kw = _case(3, 1, 1, 1, 0.0)
    x, off, weight, bias = tensors
    far = torch.full_like(off, 20.0)
    out = deform_conv2d_sampled(x, far, weight, bias, **kw)
    torch.testing.assert_close(out, bias.view(1, -1, 1, 1).expand_as(out).detach(), **F64)
    torch.testing.assert_close(out, deform_conv2d(x, far, weight, bias, **kw), **F64)
    edge = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    edge[0, 1] = -0.5  # dx = -0.5 at column 0: half of x[..., 0]
    one = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    row = x[:1, :1].detach()
    got = deform_conv2d_sampled(row, edge.expand(1, 2, 7, 9), one)
    torch.testing.assert_close(got[..., 0], 0.5 * row[..., 0], **F64)


def test_sampler_switch_and_bad_name():
    conv = torch.nn.Conv2d(6, 4, 3, padding=1)
    a, b = DeformableSampler(conv, "sampled"), DeformableSampler(conv, "torchvision")
    with torch.no_grad():
        for s in (a, b):
            s.offset.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    x = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one of"):
        DeformableSampler(conv, "grid")
    net = ESOLNet(Arch(num_classes=2, depth=18, frozen_bn=False, frozen_stages=0,
                       deformable_e=True, deformable_s=True), deform_impl="torchvision")
    assert net.conv_e.impl == net.conv_s.impl == "torchvision"
    net.set_deform_impl("sampled")
    assert net.conv_e.impl == net.conv_s.impl == "sampled"
    assert DEFORM_IMPLS == ("sampled", "torchvision")


def _steps(net: ESOLNet, params, loss_fn, lr: float, steps: int = 3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 64, 64, generator=g)
    y = torch.tensor([[1.0, 0, 0], [0, 1, 1], [1, 0, 1], [0, 0, 1]])
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    for _ in range(steps):
        maps = net.class_maps(x)
        loss = loss_fn(maps, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return maps.detach()


LR = 3e-3


def test_a_few_expansion_and_shrinkage_steps_agree_between_implementations():
    # Three SGD steps (momentum 0.9) of each ESOL stage on a ResNet-18 with a 4x4 feature
    # map: the trained offset branches agree to 1e-4 of their largest weight (seen 4e-6)
    # and the class maps to 1e-5 (seen 7e-7 of 0.3). The offsets reach 1.6 (ES) and 0.3
    # (SS) pixels, so positions leave whole pixels and some samples leave the map. At lr
    # 1e-2 (offsets 2.8 px in 3 steps) the two drift apart by up to 16%: float32 rounding
    # of the positions (1e-6 px) flips the argmax of clipping (Eq. 7) somewhere, and
    # gradient ascent amplifies it; torchvision against itself in another summation
    # order would do the same.
    torch.manual_seed(0)
    base = ESOLNet(Arch(num_classes=3, depth=18, frozen_bn=False, frozen_stages=0)).eval()
    trained = {}
    for impl in DEFORM_IMPLS:
        net = copy.deepcopy(base).set_deform_impl(impl)
        params = net.to_expansion(True, clip_beta=0.15)
        _steps(net, params, lambda m, y: -classification_loss(m.mean((2, 3)), y), lr=LR)
        params = net.to_shrinkage(True)
        maps = _steps(net, params, lambda m, y: classification_loss(m.mean((2, 3)), y)
                      + area_loss(m, y), lr=LR)
        trained[impl] = (net, maps)
    (a, maps_a), (b, maps_b) = trained["sampled"], trained["torchvision"]
    assert a.conv_e.last_offset.abs().max() > 1 and a.conv_s.last_offset.abs().max() > 0.2
    for name in ("conv_e", "conv_s"):
        for p, q in zip(getattr(a, name).offset.parameters(), getattr(b, name).offset.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-4 * q.abs().max().item())
    torch.testing.assert_close(maps_a, maps_b, rtol=1e-4, atol=1e-5)
