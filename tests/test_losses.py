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
