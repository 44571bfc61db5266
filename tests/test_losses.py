"""Eq. 1 and Eq. 6 against values computed by hand."""

import math

import pytest
import torch

from esol.losses import area_loss, classification_loss, localization_maps


def test_classification_loss_is_multilabel_soft_margin_by_hand():
    # Eq. 1 (corrected): -1/C sum [y log s(z) + (1-y) log(1 - s(z))], mean over batch.
    z = torch.tensor([[2.0, -1.0, 0.0]])
    y = torch.tensor([[1.0, 0.0, 1.0]])
    s = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = -(math.log(s(2.0)) + math.log(1 - s(-1.0)) + math.log(s(0.0))) / 3
    assert classification_loss(z, y).item() == pytest.approx(expected, rel=1e-6)


def test_localization_maps_normalise_by_spatial_max():
    maps = torch.tensor([[[[2.0, -1.0], [1.0, 4.0]]]])
    p = localization_maps(maps, eps=0.0)
    torch.testing.assert_close(p, torch.tensor([[[[0.5, 0.0], [0.25, 1.0]]]]))


def test_area_loss_by_hand_present_and_all_classes():
    # Image 0: class 0 map [4, 0, 2, 2] -> P = [1, 0, .5, .5] -> S = 0.5
    #          class 1 map [1, 1, 1, 1] -> S = 1.0 ; class 2 map all <= 0 -> S = 0
    # Image 1: class 0 map [0, 0, 0, 8] -> S = 0.25 ; class 1 [2, 2, 0, 0] -> S = 0.5; class 2 -> 0
    maps = torch.tensor([
        [[[4.0, 0.0], [2.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]], [[-1.0, -2.0], [0.0, -3.0]]],
        [[[0.0, 0.0], [0.0, 8.0]], [[2.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]],
    ])
    labels = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # Present classes: image 0 -> (0.5 + 1.0) / 2 = 0.75; image 1 -> 0.25; mean 0.5.
    assert area_loss(maps, labels, present_only=True, eps=1e-9).item() == pytest.approx(0.5)
    # All classes (the paper's 1/C sum): (0.5 + 1 + 0 + 0.25 + 0.5 + 0) / 6.
    assert area_loss(maps, labels, present_only=False, eps=1e-9).item() == pytest.approx(2.25 / 6)


def test_area_loss_ignores_images_without_classes():
    maps = torch.ones(2, 2, 2, 2)
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert area_loss(maps, labels, eps=0.0).item() == pytest.approx(1.0)


def test_expansion_objective_is_minus_alpha_times_l_cls_by_hand():
    from esol.stages import expansion_objective

    # z = 0 for both classes: L_cls = -(log 1/2 + log 1/2) / 2 = log 2.
    z, y = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])
    loss, stats = expansion_objective(0.5)(z, torch.zeros(1, 2, 2, 2), y)
    assert stats["cls_loss"] == pytest.approx(math.log(2))
    assert loss.item() == pytest.approx(-0.5 * math.log(2))  # Eq. 5


@pytest.mark.parametrize("present_only,area", [(True, 0.5), (False, 0.75)])
def test_shrinkage_objective_by_hand(present_only, area):
    from esol.stages import shrinkage_objective

    # Class 0 map [4, 0, 2, 2] -> S = 0.5; class 1 map all ones -> S = 1; only class 0
    # is in the label: present -> 0.5, all -> 0.75. Logits = map means = (2, 1).
    maps = torch.tensor([[[[4.0, 0.0], [2.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]]]])
    y = torch.tensor([[1.0, 0.0]])
    s = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    cls = -(math.log(s(2.0)) + math.log(1 - s(1.0))) / 2
    loss, stats = shrinkage_objective(2.0, 3.0, present_only)(maps.mean((2, 3)), maps, y)
    assert stats["area_loss"] == pytest.approx(area, rel=1e-4)
    assert loss.item() == pytest.approx(2.0 * cls + 3.0 * area, rel=1e-4)  # Eq. 6
    # mu = 0 (a method without L_area) leaves gamma * L_cls.
    loss0, _ = shrinkage_objective(2.0, 0.0, present_only)(maps.mean((2, 3)), maps, y)
    assert loss0.item() == pytest.approx(2.0 * cls, rel=1e-6)
