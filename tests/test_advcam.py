"""AdvCAM (esol/advcam.py) against obtain_CAM_masking.py's formula, by hand on a tiny net."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from esol.advcam import (
    advcam_class_map,
    advcam_step,
    discriminative_mask,
    multiscale_advcam,
)
from esol.models.esol_net import Arch, ESOLNet


class TinyNet(torch.nn.Module):
    """class maps = W x, a 1x1 conv of a 1-channel image: map_0 = 2x, map_1 = x."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.tensor([[2.0], [1.0]]).view(2, 1, 1, 1)

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.w)


def _image(*pixels: float) -> torch.Tensor:
    return torch.tensor(pixels, dtype=torch.float32).view(1, 1, 1, len(pixels))


def test_first_step_climbs_the_normalised_gradient_and_clamps_to_the_range():
    # x = [1, 3]: y_0 = mean(2x) = 4, y_1 = mean(x) = 2; loss = y_0 - y_1, A_0 = A (no
    # regulariser): d loss / dx_i = (2 - 1) / 2 = 0.5, normalised to 1, times 0.08.
    x1, cam = advcam_step(TinyNet(), _image(1, 3), 0, None, 7, 0.08, 0.5, flip=False)
    torch.testing.assert_close(cam, torch.tensor([[2.0, 6.0]]))
    # 3 + 0.08 leaves [min x, max x] = [1, 3]: clamped.
    torch.testing.assert_close(x1.view(-1), torch.tensor([1.08, 3.0]))


def test_regions_above_score_th_are_masked_in_the_regulariser():
    # A = relu(2x) = [2, 6], A / max = [1/3, 1]: only pixel 1 exceeds score_th 0.5.
    torch.testing.assert_close(discriminative_mask(torch.tensor([[2.0, 6.0]]), 0.5),
                               torch.tensor([[0.0, 1.0]]))
    # A_0 = [0, 4]: L_AD = |6 - 4| = 2 (pixel 0's difference of 2 is masked out).
    # grad = d(y_0 - y_1)/dx - 7 dL_AD/dx = [0.5, 0.5] - 7 [0, 2] = [0.5, -13.5];
    # x <- x + 0.08 grad / 13.5 = [1 + 0.04 / 13.5, 3 - 0.08].
    x1, _ = advcam_step(TinyNet(), _image(1, 3), 0, torch.tensor([[0.0, 4.0]]), 7, 0.08, 0.5,
                        flip=False)
    torch.testing.assert_close(x1.view(-1), torch.tensor([1 + 0.04 / 13.5, 2.92]))


def test_other_classes_are_restrained():
    # Manipulating for class 1 (map x) pushes against class 0 (map 2x): grad = (1 - 2)/2
    # < 0, so the image darkens: x <- x - 0.08, clamped at min x = 1.
    x1, _ = advcam_step(TinyNet(), _image(1, 3), 1, None, 7, 0.08, 0.5, flip=False)
    torch.testing.assert_close(x1.view(-1), torch.tensor([1.0, 2.92]))


def test_class_map_sums_the_maps_of_every_step():
    # Steps from x = [1, 3]: A_0 = [2, 6]; x_1 = [1.08, 3] gives A_1 = [2.16, 6].
    total = advcam_class_map(TinyNet(), _image(1, 3), 0, 2, 7, 0.08, 0.5, flip=False)
    torch.testing.assert_close(total, torch.tensor([[4.16, 12.0]]))


def test_multiscale_advcam_fills_only_the_images_classes():
    torch.manual_seed(0)
    net = ESOLNet(Arch(num_classes=3, depth=18, frozen_bn=False, frozen_stages=0)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    image = (np.random.default_rng(0).random((40, 36, 3)) * 255).astype(np.uint8)
    settings = {"adv_iter": 2, "ad_coeff": 7.0, "ad_stepsize": 0.08, "score_th": 0.5}
    strided, high = multiscale_advcam(net, image, [2], [1.0, 0.5], True, settings)
    assert strided.shape == (3, 10, 9) and high.shape == (3, 40, 36)
    assert float(high[:2].abs().sum()) == 0.0 and torch.isfinite(high).all()


@pytest.mark.parametrize("stage", ["expansion", "shrinkage"])
def test_advcam_needs_the_classifier(tmp_path, stage):
    from dataclasses import replace

    from esol.advcam import make_advcams

    net = ESOLNet(Arch(num_classes=3, depth=18, frozen_bn=False, frozen_stages=0))
    net.arch = replace(net.arch, stage=stage)

    class Info:
        labels = {"train": {}}

    with pytest.raises(ValueError, match="classifier"):
        make_advcams(net, Info(), "train", tmp_path / "x.h5", [1.0], True, {}, torch.device("cpu"))
