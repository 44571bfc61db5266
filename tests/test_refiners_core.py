"""The refiners' shared core: pairs within a radius, relation labels, the sparse walk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from esol.irn import paths
from esol.irn.random_walk import random_walk as irn_random_walk
from esol.irn.random_walk import transition_matrix as irn_transition_matrix
from esol.refiners import core

DATA = Path(__file__).parent / "data"


def test_pairs_match_a_hand_enumeration():
    # 2 x 3 map, flat indices   0 1 2
    #                           3 4 5
    # radius 2: offsets (0, 1), (1, -1), (1, 0), (1, 1) (squared length < 4).
    assert core.forward_offsets(2).tolist() == [[0, 1], [1, -1], [1, 0], [1, 1]]
    pairs = core.pairs_in_radius((2, 3), 2)
    expected = [(0, 1), (1, 2), (3, 4), (4, 5),  # (0, 1): horizontal neighbours
                (1, 3), (2, 4),                  # (1, -1): down-left
                (0, 3), (1, 4), (2, 5),          # (1, 0): vertical
                (0, 4), (1, 5)]                  # (1, 1): down-right
    assert list(zip(pairs.src.tolist(), pairs.dst.tolist(), strict=True)) == expected
    assert pairs.slices == [(0, 1, 0, 2, 0, 2), (1, -1, 0, 1, 1, 3), (1, 0, 0, 1, 0, 3),
                            (1, 1, 0, 1, 0, 2)]


def test_pairs_are_irn_pairs_and_psa_pairs_a_subset():
    size, radius = (7, 11), 5
    ours = core.pairs_in_radius(size, radius)
    assert np.array_equal(core.forward_offsets(radius), paths.forward_offsets(radius))
    irn = paths.PairIndex(size, radius)
    assert sorted(zip(ours.src.tolist(), ours.dst.tolist())) == sorted(
        zip(irn.src.tolist(), irn.dst.tolist()))
    # PSA's get_indices_of_pairs: sources in the inner rectangle rows [0, h - r + 1),
    # columns [r - 1, w - r + 1), every offset; all of them are among ours.
    h, w = size
    full = np.arange(h * w).reshape(h, w)
    rf = radius - 1
    psa = {(int(s), int(s + dy * w + dx)) for dy, dx in core.forward_offsets(radius)
           for s in full[:h - rf, rf:w - rf].ravel()}
    assert psa <= set(zip(ours.src.tolist(), ours.dst.tolist()))
    # every pair really is within the radius, and none is repeated
    d = np.stack(np.divmod(ours.dst, w)) - np.stack(np.divmod(ours.src, w))
    assert ((d ** 2).sum(0) < radius ** 2).all() and len(set(zip(ours.src, ours.dst))) == len(ours)


def test_relation_labels_by_hand():
    # labels 0 1 255 / 0 1 2 ; radius 2 pairs in the order of the hand enumeration above
    label = torch.tensor([[[0, 1, 255], [0, 1, 2]]])
    out = core.relation_labels(label, core.pairs_in_radius((2, 3), 2))
    # pairs: (0,1) (1,2) (3,4) (4,5) (1,3) (2,4) (0,3) (1,4) (2,5) (0,4) (1,5)
    # labels: 0-1 1-255 0-1 1-2 1-0 255-1 0-0 1-1 255-2 0-1 1-2
    assert out["bg_pos"][0].tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert out["fg_pos"][0].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert out["neg"][0].tolist() == [1, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1]


def test_transition_matrix_by_hand():
    # two pixels, one pair of affinity a: A = [[1, a], [a, 1]], P = A / (1 + a)
    a = 0.25
    p = core.transition_matrix(torch.tensor([0]), torch.tensor([1]), torch.tensor([a]), 2)
    torch.testing.assert_close(p.to_dense(), torch.tensor([[1, a], [a, 1]]) / (1 + a))
    x = torch.tensor([[[1.0, 0.0]]])  # (C=1, h=1, w=2)
    # two steps: P^2 [1, 0]^T = [(1 + a^2), 2a] / (1 + a)^2
    expected = torch.tensor([[[1 + a * a, 2 * a]]]) / (1 + a) ** 2
    torch.testing.assert_close(core.random_walk(x, p, 2), expected)


def test_shared_walk_reproduces_irn_before_the_refactor():
    """Regression: ``esol.irn.random_walk`` on the shared core gives, bit for bit, what it
    gave before the core existed (fixture made at commit 265af03 by
    tests/data/make_irn_walk_reference.py)."""
    ref = np.load(DATA / "irn_walk_reference.npz")
    for case in ("a", "b"):
        radius, beta, t = ref[f"{case}_params"].tolist()
        boundary = torch.from_numpy(ref[f"{case}_boundary"])
        scores = torch.from_numpy(ref[f"{case}_scores"])
        p = irn_transition_matrix(boundary, int(radius), beta)
        np.testing.assert_array_equal(p.to_dense().numpy(), ref[f"{case}_transition"])
        walked = irn_random_walk(scores, boundary, int(radius), beta, int(t))
        np.testing.assert_array_equal(walked.numpy(), ref[f"{case}_walked"])
