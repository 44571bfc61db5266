"""IRN (Ahn et al. CVPR 2019): pairs and paths, relation labels, boundary-to-affinity, the
transition matrix, the random walk, the losses and the network, on cases small enough
to check by hand."""

import math

import numpy as np
import pytest
import torch

from esol.irn.losses import affinity_losses, displacement_losses, irn_loss
from esol.irn.net import IRNArch, IRNet, MeanShift
from esol.irn.paths import (PairIndex, forward_offsets, line_pixels, pair_index, path_affinity,
                            relation_labels)
from esol.irn.random_walk import random_walk, transition_matrix, walk_to_label


def _pairs(index: PairIndex, mask=None) -> set[frozenset]:
    """Unordered pixel pairs (as (y, x) tuples) of an index, optionally where mask is set."""
    h, w = index.size
    keep = np.ones(len(index), bool) if mask is None else np.asarray(mask, bool)
    return {frozenset({divmod(int(s), w), divmod(int(d), w)})
            for s, d in zip(index.src[keep], index.dst[keep], strict=True)}


# -- pairs and paths --------------------------------------------------------------------

def test_forward_offsets_are_half_the_disc():
    assert forward_offsets(2).tolist() == [[0, 1], [1, -1], [1, 0], [1, 1]]
    off = forward_offsets(10)
    assert len(off) == 152  # IRN's 152 directions at radius 10 (34 at radius 5)
    assert len(forward_offsets(5)) == 34
    assert np.all((off[:, 0] > 0) | ((off[:, 0] == 0) & (off[:, 1] > 0)))
    assert np.all((off ** 2).sum(1) < 100)


def test_line_pixels_by_hand():
    # Horizontal: every pixel of the segment, both ends included.
    assert sorted(map(tuple, line_pixels(0, 3))) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    # (2, 1): every point of the 3x2 box is within one pixel of the line y = 2x.
    assert len(line_pixels(2, 1)) == 6
    # Diagonal (2, 2): |2x - 2y|^2 / 8 < 1 keeps the diagonal and its 4-neighbours.
    assert sorted(map(tuple, line_pixels(2, 2))) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2),
                                                    (2, 1), (2, 2)]


def test_pair_index_holds_every_pair_within_the_radius_once():
    index = PairIndex((4, 5), 3)
    cells = [(y, x) for y in range(4) for x in range(5)]
    brute = {frozenset({a, b}) for a in cells for b in cells
             if a != b and (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 < 9}
    assert _pairs(index) == brute and len(index) == len(brute)
    assert np.array_equal(index.dst - index.src, index.offset[:, 0] * 5 + index.offset[:, 1])


# -- relation labels --------------------------------------------------------------------

def test_relation_labels_by_hand():
    # a b c        0 1 255
    # d e f   =    0 1 1      8-neighbourhood (radius 2): 11 pairs.
    label = torch.tensor([[[0, 1, 255], [0, 1, 1]]])
    index = PairIndex((2, 3), 2)
    rel = {k: v[0].numpy() for k, v in relation_labels(label, index).items()}
    a, b, c, d, e, f = (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)
    pair = lambda p, q: frozenset({p, q})  # noqa: E731
    assert _pairs(index, rel["bg_pos"]) == {pair(a, d)}
    assert _pairs(index, rel["fg_pos"]) == {pair(e, f), pair(b, e), pair(b, f)}
    assert _pairs(index, rel["neg"]) == {pair(a, b), pair(d, e), pair(a, e), pair(b, d)}
    ignored = _pairs(index) - _pairs(index, rel["bg_pos"] + rel["fg_pos"] + rel["neg"])
    assert ignored == {pair(b, c), pair(c, f), pair(c, e)}  # every pair touching 255


# -- boundary to affinity, transition matrix --------------------------------------------

def test_path_affinity_is_one_minus_the_path_maximum():
    boundary = torch.zeros(1, 3, 5)
    boundary[0, 1, 2] = 0.3
    index = PairIndex((3, 5), 3)
    aff = path_affinity(boundary, index)[0].numpy()
    by_pair = {frozenset({divmod(int(s), 5), divmod(int(d), 5)}): a
               for s, d, a in zip(index.src, index.dst, aff, strict=True)}
    assert by_pair[frozenset({(1, 0), (1, 2)})] == pytest.approx(0.7)  # ends on the 0.3 pixel
    assert by_pair[frozenset({(1, 1), (1, 3)})] == pytest.approx(0.7)  # crosses it
    assert by_pair[frozenset({(0, 0), (0, 2)})] == pytest.approx(1.0)  # passes above it
    assert by_pair[frozenset({(0, 1), (2, 3)})] == pytest.approx(0.7)  # diagonal through it


def test_path_affinity_gradient_reaches_the_path_maximum_only():
    boundary = torch.tensor([[[0.1, 0.5, 0.2]]], requires_grad=True)
    index = PairIndex((1, 3), 3)  # pairs (0,1), (1,2) and (0,2)
    path_affinity(boundary, index).sum().backward()
    # Every pair's maximum is the middle pixel: three pairs each pass -1 to it.
    assert boundary.grad.tolist() == [[[0.0, -3.0, 0.0]]]


def test_transition_matrix_by_hand():
    # 1x3 map, boundary [0, 0.5, 0], radius 2 (only horizontal neighbours), beta 1:
    # A = [[1, .5, 0], [.5, 1, .5], [0, .5, 1]], P = D^-1 A.
    p = transition_matrix(torch.tensor([[0.0, 0.5, 0.0]]), radius=2, beta=1).to_dense()
    expected = torch.tensor([[1 / 1.5, 0.5 / 1.5, 0], [0.25, 0.5, 0.25], [0, 1 / 3, 2 / 3]])
    torch.testing.assert_close(p, expected)


def test_transition_rows_sum_to_one_and_a_wall_blocks_it():
    torch.manual_seed(0)
    boundary = torch.rand(8, 9) * 0.6
    boundary[:, 4] = 1.0  # a full-height wall
    p = transition_matrix(boundary, radius=5, beta=10).to_dense()
    torch.testing.assert_close(p.sum(1), torch.ones(72))
    cols = torch.arange(72) % 9
    left, right = cols < 4, cols > 4
    assert p[left][:, right].abs().max() == 0 and p[right][:, left].abs().max() == 0
    # A = D P is symmetric (every pair is related both ways with one affinity).
    degree = 1 / torch.diagonal(p)  # the diagonal of A is 1
    a = degree[:, None] * p
    torch.testing.assert_close(a, a.T)


# -- random walk ------------------------------------------------------------------------

def _blob(size: int = 16) -> torch.Tensor:
    scores = torch.zeros(1, size, size)
    scores[0, 7:9, 7:9] = 1.0
    return scores


def test_random_walk_spreads_without_boundaries():
    out = random_walk(_blob(), torch.zeros(16, 16), radius=5, beta=10, exp_times=8)[0]
    assert out.min() > 0.5 * out.max()  # 256 steps reach every pixel of the map
    # Each step averages over neighbours (P is row-stochastic); the walk tends to the
    # degree-weighted mean of the seed (degree = 1 / diagonal of P, as A's diagonal is 1).
    degree = 1 / torch.diagonal(transition_matrix(torch.zeros(16, 16), 5, 10).to_dense())
    limit = (degree * _blob().flatten()).sum() / degree.sum()
    torch.testing.assert_close(out, torch.full_like(out, limit.item()), rtol=0.02, atol=0)


def test_random_walk_stays_inside_a_closed_boundary():
    boundary = torch.zeros(16, 16)
    boundary[4, 4:12] = boundary[11, 4:12] = boundary[4:12, 4] = boundary[4:12, 11] = 1.0
    out = random_walk(_blob(), boundary, radius=5, beta=10, exp_times=8)[0]
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[5:11, 5:11] = True
    assert out[~inside].abs().max() == 0  # nothing crosses the ring, nothing sits on it
    assert out[inside].min() > 0.5 * out[inside].max()  # the interior fills up
    label = walk_to_label(out[None], np.array([3]), (64, 64), bg_threshold=0.25)
    assert label[24:40, 24:40].min() == 3 and label[:12].max() == 0 and label[52:].max() == 0


def test_random_walk_equals_irn_dense_matrix_power():
    """IRN: T = A^beta normalised over columns, rw = x T^(2^t) by repeated squaring."""
    torch.manual_seed(1)
    boundary = torch.rand(6, 7) ** 3
    scores = torch.rand(2, 6, 7)
    beta, t = 3.0, 4
    p = transition_matrix(boundary, radius=3, beta=beta).to_dense().double()
    a = (1 / torch.diagonal(p))[:, None] * p  # A^beta
    trans = a / a.sum(0, keepdim=True)
    for _ in range(t):
        trans = trans @ trans
    x = (scores * (1 - boundary)).reshape(2, -1).double()
    expected = (x @ trans).reshape(2, 6, 7).float()
    torch.testing.assert_close(random_walk(scores, boundary, 3, beta, t), expected,
                               rtol=1e-4, atol=1e-6)


def test_walk_to_label_background_score_and_keys():
    walked = torch.zeros(2, 2, 2)
    walked[0, 0, 0] = 2.0  # class 5 peak
    walked[1, 1, 1] = 0.4  # class 7: 0.4 / 2 = 0.2 < 0.25 -> background
    walked[1, 0, 1] = 1.0  # 0.5 -> class 7
    label = walk_to_label(walked, np.array([5, 7]), (6, 7), bg_threshold=0.25)
    assert label.shape == (6, 7) and label.dtype == np.uint8
    assert label[0, 0] == 5 and label[0, 6] == 7 and label[5, 6] == 0
    assert set(np.unique(label)) <= {0, 5, 7}
    assert walk_to_label(torch.zeros(0, 2, 2), np.array([]), (5, 5), 0.25).max() == 0


# -- losses -----------------------------------------------------------------------------

def test_affinity_losses_by_hand():
    aff = torch.tensor([[0.5, 0.9, 0.2, 0.7]])
    labels = {"bg_pos": torch.tensor([[1.0, 0, 0, 0]]), "fg_pos": torch.tensor([[0, 1.0, 0, 0]]),
              "neg": torch.tensor([[0, 0, 1.0, 1.0]])}
    pos, neg = affinity_losses(aff, labels)
    eps = 1e-5
    exp_pos = (-math.log(0.5 + eps) / (1 + eps) - math.log(0.9 + eps) / (1 + eps)) / 2
    exp_neg = (-math.log(1 + eps - 0.2) - math.log(1 + eps - 0.7)) / (2 + eps)
    assert pos.item() == pytest.approx(exp_pos, rel=1e-5)
    assert neg.item() == pytest.approx(exp_neg, rel=1e-5)


def test_displacement_losses_by_hand():
    # 1x3 map, radius 2: pairs (0,1) and (1,2), both with offset (dy, dx) = (0, 1).
    index = PairIndex((1, 3), 2)
    disp = torch.tensor([[[[0.0, 1.0, 5.0]], [[2.0, 0.0, -1.0]]]])  # (1, 2, 1, 3): dy, dx
    labels = {"fg_pos": torch.tensor([[1.0, 0.0]]), "bg_pos": torch.tensor([[0.0, 1.0]]),
              "neg": torch.zeros(1, 2)}
    order = {(int(s), int(d)): i for i, (s, d) in enumerate(zip(index.src, index.dst, strict=True))}
    labels = {k: v[:, [order[(0, 1)], order[(1, 2)]]] for k, v in labels.items()}
    fg, bg = displacement_losses(disp, index, labels)
    # pair (0,1): D0 - D1 = (-1, 2), target (0, 1): |(-1, 1)|_1 = 2, over 2 * 1 pairs.
    assert fg.item() == pytest.approx(2 / (2 + 1e-5))
    # pair (1,2): D1 - D2 = (-4, 1): |.|_1 = 5, over 2.
    assert bg.item() == pytest.approx(5 / (2 + 1e-5))
    total, stats = irn_loss(torch.full((1, 2), 0.5), disp, index, labels)
    assert total.item() == pytest.approx((stats["pos_aff"] + stats["neg_aff"]) / 2
                                         + (stats["dp_fg"] + stats["dp_bg"]) / 2, rel=1e-6)


def test_a_displacement_field_to_one_centroid_has_zero_foreground_loss():
    h, w = 6, 7
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    disp = torch.stack([3.0 - ys, 2.0 - xs])[None]  # every pixel points to (3, 2)
    index = pair_index((h, w), 4)
    labels = relation_labels(torch.ones(1, h, w, dtype=torch.long), index)
    fg, _ = displacement_losses(disp, index, labels)
    assert fg.item() == pytest.approx(0.0, abs=1e-6)


# -- network ----------------------------------------------------------------------------

def test_irnet_outputs_at_stride_4_and_trains_only_its_branches():
    torch.manual_seed(0)
    net = IRNet(IRNArch(depth=18, frozen_bn=False)).train()
    assert not net.backbone.training
    x = torch.randn(2, 3, 70, 53)
    boundary, disp = net(x)
    assert boundary.shape == (2, 1, 18, 14) and disp.shape == (2, 2, 18, 14)  # ceil(/4)
    edge, dp = net.branch_parameters()
    assert all(not p.requires_grad for p in net.backbone.parameters())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD([{"params": edge}, {"params": dp}], lr=0.1)
    index = pair_index((18, 14), 3)
    labels = relation_labels(torch.randint(0, 3, (2, 18, 14)), index)
    loss, _ = irn_loss(path_affinity(torch.sigmoid(boundary), index), disp, index, labels)
    loss.backward()
    opt.step()
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(not k.startswith("backbone.") for k in changed)
    assert any(k.startswith("edge") for k in changed) and any(k.startswith("dp") for k in changed)


def test_mean_shift_tracks_in_training_and_subtracts_at_inference():
    ms = MeanShift(2).train()
    x = torch.ones(1, 2, 3, 3) * torch.tensor([1.0, -2.0]).view(1, 2, 1, 1)
    assert torch.equal(ms(x), x)
    torch.testing.assert_close(ms.running_mean, torch.tensor([0.1, -0.2]))
    ms.eval()
    torch.testing.assert_close(ms(x), x - torch.tensor([0.1, -0.2]).view(1, 2, 1, 1))


def test_boundary_map_averages_an_image_and_its_mirror():
    torch.manual_seed(0)
    net = IRNet(IRNArch(depth=18, frozen_bn=False)).eval()
    x = torch.randn(1, 3, 32, 40)
    b = net.boundary_map(x)
    b_mirror = net.boundary_map(x.flip(-1))
    assert b.shape == (8, 10)
    torch.testing.assert_close(b, b_mirror.flip(-1))


def test_boundary_map_pads_to_the_training_crop_as_irn():
    # IRN's EdgeDisplacement pads both images (zeros = mean colour) at the bottom and right
    # to the crop size, runs the network, crops to ceil(size / 4), then averages the maps.
    torch.manual_seed(0)
    net = IRNet(IRNArch(depth=18, frozen_bn=False)).eval()
    x = torch.randn(1, 3, 37, 22)
    padded = torch.nn.functional.pad(torch.cat([x, x.flip(-1)]), [0, 64 - 22, 0, 64 - 37])
    with torch.no_grad():
        logits = net(padded)[0][:, 0, :10, :6]
    expected = torch.sigmoid(logits[0] / 2 + logits[1].flip(-1) / 2)
    b = net.boundary_map(x, pad_to=64)
    assert b.shape == (10, 6)
    torch.testing.assert_close(b, expected)
    # GroupNorm sees other statistics without the padding: the map differs.
    assert not torch.allclose(net.boundary_map(x), b, atol=1e-3)


def test_pseudo_label_pads_the_image_to_irn_train_crop(monkeypatch):
    from esol.irn import stage

    torch.manual_seed(0)
    net = IRNet(IRNArch(depth=18, frozen_bn=False)).eval()
    seen = []
    forward = IRNet.forward
    monkeypatch.setattr(IRNet, "forward", lambda self, x: seen.append(tuple(x.shape)) or forward(self, x))
    image = np.random.default_rng(0).integers(0, 255, (37, 22, 3), dtype=np.uint8)
    cams = np.random.default_rng(1).random((1, 10, 6)).astype(np.float32)
    walk = {"radius": 3, "beta": 10, "exp_times": 1, "bg_threshold": 0.25}
    label = stage.pseudo_label(net, image, cams, np.array([2]), walk, pad_to=64)
    assert seen == [(2, 3, 64, 64)] and label.shape == (37, 22)


def test_make_pseudo_masks_pads_to_irn_train_crop(monkeypatch, tiny_voc, tmp_path, config):
    # The rule pads to irn.train.crop (IRN: EdgeDisplacement(crop_size=512), its crop).
    from esol.cam import CamRecord, write_cams
    from esol.data.voc import prepare_dataset
    from esol.irn import stage

    info = prepare_dataset(tiny_voc, ["one", "two", "three"], ["train_aug", "train", "val"])
    info.to_json(tmp_path / "d.json")
    torch.save(IRNet(IRNArch(depth=18, frozen_bn=False)).checkpoint(), tmp_path / "irn.pt")
    records = ((i, CamRecord(keys=np.array(k), cam=np.ones((len(k), 3, 4), np.float32),
                             high_res=np.ones((len(k), 12, 16), np.float32)))
               for i, k in info.labels["train_aug"].items())
    write_cams(tmp_path / "c.h5", records, total=3, attrs={})
    pads = []

    def spy(net, image, *args, pad_to=None, **kwargs):
        pads.append(pad_to)
        return np.zeros(image.shape[:2], np.uint8)

    monkeypatch.setattr(stage, "pseudo_label", spy)
    config["irn"]["calibrate_to"] = None
    config["refine"]["threshold"] = 0.15  # fixed: no tuned threshold file in this test
    config["irn"]["train"]["crop"] = 48
    config["device"] = "cpu"
    stage.make_pseudo_masks(config, tmp_path / "d.json", tmp_path / "irn.pt", tmp_path / "c.h5",
                            tmp_path / "masks")
    assert pads == [48, 48, 48]


def test_reduce_label_samples_the_centres_of_stride_4_cells():
    # IRN: pil_rescale(label, 0.25, 0), PIL nearest, centre-aligned: pixels 2, 6, 10.
    from esol.irn.stage import reduce_label

    label = (np.arange(12)[:, None] * 12 + np.arange(12)[None]).astype(np.uint8)
    reduced = reduce_label(label)
    assert reduced.tolist() == [[26, 30, 34], [74, 78, 82], [122, 126, 130]]  # (2,2), (2,6), ...
    np.testing.assert_array_equal(reduced, label[2::4, 2::4])


def test_affinity_dataset_labels_are_sampled_at_cell_centres(tmp_path):
    # Through the dataset train_irn uses: a 12x12 image, crop 12, no rescale.
    from conftest import write_voc_fixture

    from esol.data.voc import prepare_dataset, write_label
    from esol.irn.stage import AffinityDataset

    mask = np.zeros((12, 12), np.uint8)
    mask[:, 6:] = 1
    root = write_voc_fixture(tmp_path / "voc", {"a": mask}, {"train": ["a"]}, aug=False)
    info = prepare_dataset(root, ["one"], ["train"])
    label = (np.arange(12)[:, None] * 12 + np.arange(12)[None]).astype(np.uint8)
    write_label(tmp_path / "a.png", label)
    ds = AffinityDataset(info, "train", tmp_path, crop=12, rescale=(1.0, 1.0), seed=0)
    seen = set()
    for epoch in range(8):  # both flips
        ds.set_epoch(epoch)
        got = ds[0]["label"].numpy()
        flipped = label[:, ::-1]
        assert (np.array_equal(got, label[2::4, 2::4])
                or np.array_equal(got, flipped[2::4, 2::4])), got
        seen.add(np.array_equal(got, label[2::4, 2::4]))
    assert seen == {True, False}
