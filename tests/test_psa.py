"""PSA / AffinityNet (esol.refiners.psa): labels, affinities, loss, walk, and the three rules."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from esol.cam import CamRecord, write_cams
from esol.data.voc import prepare_dataset, read_label
from esol.refiners import core, psa


# -- affinity labels -----------------------------------------------------------------------

def test_bg_augmented_by_hand():
    cams = np.array([[[0.5, 1.0, 0.0]], [[0.25, 0.0, 0.0]]], np.float32)  # 2 classes, 1 x 3
    out = psa.bg_augmented(cams, alpha=4)
    # background (1 - max)^4: (1 - 0.5)^4 = 0.0625, (1 - 1)^4 = 0, (1 - 0)^4 = 1
    np.testing.assert_allclose(out[0, 0], [0.0625, 0.0, 1.0])
    np.testing.assert_array_equal(out[1:], cams)
    np.testing.assert_array_equal(psa.bg_augmented(np.zeros((0, 1, 2)), 32), np.ones((1, 1, 2)))


def test_affinity_label_on_a_tiny_map_by_hand():
    # Two classes of the image; 1 x 5 cells of block-averaged scores [bg, class 1, class 2].
    la = np.array([[0.7, 0.2, 0.3, 0.1, 0.0],    # low alpha: background large
                   [0.2, 0.7, 0.6, 0.1, 0.0],
                   [0.1, 0.1, 0.1, 0.8, 0.0]])[:, None]
    ha = np.array([[0.6, 0.1, 0.1, 0.0, 0.0],    # high alpha: background small
                   [0.3, 0.8, 0.8, 0.1, 0.0],
                   [0.1, 0.1, 0.1, 0.9, 0.0]])[:, None]
    # cell 0: la argmax bg -> 255, ha argmax bg -> 0 (confident background)
    # cell 1: la argmax class 1 -> 1;  cell 2: la class 1 -> 1
    # cell 3: la argmax class 2 -> 2;  cell 4: no score anywhere (padding) -> 255
    assert psa.affinity_label(la, ha).tolist() == [[0, 1, 1, 2, 255]]
    # the band between: la background, ha foreground -> 255
    band = psa.affinity_label(np.array([[[0.6]], [[0.4]]]), np.array([[[0.3]], [[0.7]]]))
    assert band.tolist() == [[255]]
    # and its relation labels (radius 2 on 1 x 5: pairs (i, i+1) only)
    rel = core.relation_labels(torch.tensor([[[0, 1, 1, 2, 255]]]), core.pairs_in_radius((1, 5), 2))
    assert rel["bg_pos"][0].tolist() == [0, 0, 0, 0]
    assert rel["fg_pos"][0].tolist() == [0, 1, 0, 0]
    assert rel["neg"][0].tolist() == [1, 0, 1, 0]


def test_block_mean_and_cam_at_stride_by_hand():
    x = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    np.testing.assert_allclose(psa.block_mean(x, 2)[..., 0], [[2.5, 4.5], [10.5, 12.5]])
    # a 10 x 8 image, one class at 0.5: padded to 16 x 8, two 8 x 8 cells; the second cell
    # holds 2 image rows of 8, the rest is zero padding (background included, as infer_aff.py)
    cams = np.full((1, 10, 8), 0.5, np.float32)
    out = psa.cam_at_stride(cams, alpha=16)
    assert out.shape == (2, 2, 1)
    torch.testing.assert_close(out[:, :, 0], torch.tensor([[0.5 ** 16, 0.5 ** 16 * 2 / 8],
                                                           [0.5, 0.5 * 2 / 8]]))


def test_dataset_label_from_block_means_by_hand(tmp_path):
    """A 16 x 16 image, crop 16: two 8 x 8 cells per side. Left half: low alpha says class
    1; right half: low alpha says background, high alpha background on top (confident
    background) and foreground below (the band between). Labels 1 0 / 1 255, or mirrored."""
    from types import SimpleNamespace

    from PIL import Image

    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(tmp_path / "x.png")
    la = np.zeros((2, 16, 16)); ha = np.zeros((2, 16, 16))
    la[:, :, :8] = np.array([0.2, 0.8])[:, None, None]
    la[:, :, 8:] = np.array([0.9, 0.1])[:, None, None]
    ha[:, :, :8] = np.array([0.1, 0.9])[:, None, None]
    ha[:, :8, 8:] = np.array([0.7, 0.3])[:, None, None]
    ha[:, 8:, 8:] = np.array([0.3, 0.7])[:, None, None]
    la[:, 0, 0] = [0.9, 0.05]  # one pixel says background; its block's mean still says class 1
    scores = tmp_path / "scores"
    scores.mkdir()
    np.savez(scores / "x.npz", la=np.round(la * 255).astype(np.uint8),
             ha=np.round(ha * 255).astype(np.uint8), keys=np.array([1]))
    info = SimpleNamespace(ids=lambda split: ["x"],
                           layout=SimpleNamespace(image=lambda i: tmp_path / f"{i}.png"))
    expected = np.array([[1, 0], [1, 255]])
    seen = set()
    for seed in range(6):
        label = psa.PSADataset(info, "train", scores, crop=16, seed=seed)[0]["label"].numpy()
        assert np.array_equal(label, expected) or np.array_equal(label, expected[:, ::-1])
        seen.add(bool(np.array_equal(label, expected)))
    assert seen == {True, False}  # both flips drawn


# -- affinities, loss, walk ----------------------------------------------------------------

def test_pair_affinity_by_hand_and_as_psa_gathers_it():
    f = torch.tensor([[[[0.0, 1.0]], [[0.0, 3.0]]]])  # (1, C=2, 1, 2): f0 = (0, 0), f1 = (1, 3)
    aff = psa.pair_affinity(f, core.pairs_in_radius((1, 2), 2))
    torch.testing.assert_close(aff, torch.tensor([[math.exp(-2.0)]]))  # mean |(1, 3)| = 2
    # resnet38_aff.py: index_select of sources and destinations, exp(-mean |ft - ff|)
    torch.manual_seed(0)
    f = torch.rand(2, 5, 6, 7)
    pairs = core.pairs_in_radius((6, 7), 3)
    src, dst = pairs.tensors()
    flat = f.flatten(2)
    expected = torch.exp(-(flat[:, :, dst] - flat[:, :, src]).abs().mean(1))
    torch.testing.assert_close(psa.pair_affinity(f, pairs), expected)


def test_psa_loss_equals_the_formula_on_a_toy_batch():
    aff = torch.tensor([[0.9, 0.5, 0.2, 0.7], [0.6, 0.99, 0.1, 0.3]])
    bg = torch.tensor([[1.0, 0, 0, 0], [1, 0, 0, 0]])
    fg = torch.tensor([[0.0, 1, 0, 0], [0, 1, 0, 0]])
    neg = torch.tensor([[0.0, 0, 1, 1], [0, 0, 0, 1]])
    e = 1e-5
    l_bg = (-math.log(0.9 + e) - math.log(0.6 + e)) / (2 + e)
    l_fg = (-math.log(0.5 + e) - math.log(0.99 + e)) / (2 + e)
    l_neg = (-math.log(1 + e - 0.2) - math.log(1 + e - 0.7) - math.log(1 + e - 0.3)) / (3 + e)
    loss, stats = psa.psa_loss(aff, {"bg_pos": bg, "fg_pos": fg, "neg": neg})
    assert loss.item() == pytest.approx(l_bg / 4 + l_fg / 4 + l_neg / 2, rel=1e-6)
    assert stats["bg_loss"] == pytest.approx(l_bg, rel=1e-6)
    assert stats["neg_loss"] == pytest.approx(l_neg, rel=1e-6)
    assert (stats["bg_pairs"], stats["fg_pairs"], stats["neg_pairs"]) == (2, 2, 3)


def test_walk_with_psa_affinities_stays_inside_a_region_of_low_affinity():
    """Features 0 inside a 6 x 6 square, 10 outside: affinities across its border are
    exp(-10)^8 ~ 2e-35, inside 1. A seed in the square fills the square, nothing leaks."""
    size = 16
    feats = torch.full((1, 4, size, size), 10.0)
    inside = torch.zeros(size, size, dtype=torch.bool)
    inside[5:11, 5:11] = True
    feats[:, :, inside] = 0.0
    pairs = core.pairs_in_radius((size, size), 5)
    aff = psa.pair_affinity(feats, pairs)[0]
    scores = torch.zeros(2, size, size)
    scores[0] = 0.05  # a background channel everywhere (the seed spreads to 4 / 36 = 0.11)
    scores[1, 7:9, 7:9] = 1.0  # the seed of class 1
    walked = psa.psa_random_walk(scores, aff, pairs, beta=8, logt=8)
    cls = walked[1]
    assert cls[~inside].max() < 1e-20 * cls[inside].max()
    assert cls[inside].min() > 0.9 * cls[inside].max()  # 256 steps spread it over the square
    label = psa.walk_to_label(walked, np.array([7]), (size * 8, size * 8))
    assert label[48:80, 48:80].min() == 7 and label[:32].max() == 0 and label[100:].max() == 0
    # with the region open (all features equal) the same seed reaches everywhere
    open_walk = psa.psa_random_walk(scores, psa.pair_affinity(torch.zeros_like(feats), pairs)[0],
                                    pairs, beta=8, logt=8)[1]
    assert open_walk.min() > 0.5 * open_walk.max()


def test_psa_walk_equals_psa_dense_repeated_squaring():
    """infer_aff.py: T = A^beta normalised over columns, squared logt times, x T."""
    torch.manual_seed(2)
    h, w, beta, logt = 5, 6, 3.0, 4
    pairs = core.pairs_in_radius((h, w), 3)
    aff = torch.rand(len(pairs))
    scores = torch.rand(3, h, w)
    src, dst = pairs.tensors()
    a = torch.eye(h * w, dtype=torch.float64)
    a[src, dst] = a[dst, src] = aff.double() ** beta
    trans = a / a.sum(0, keepdim=True)
    for _ in range(logt):
        trans = trans @ trans
    expected = (scores.reshape(3, -1).double() @ trans).reshape(3, h, w).float()
    torch.testing.assert_close(psa.psa_random_walk(scores, aff, pairs, beta, logt), expected,
                               rtol=1e-4, atol=1e-6)


# -- the network -----------------------------------------------------------------------------

def test_affinity_net_at_stride_8_trains_what_psa_trains():
    net = psa.AffinityNet(psa.PSAArch(depth=18, frozen_bn=True))
    out = net(torch.rand(2, 3, 64, 48))
    assert out.shape == (2, 448, 8, 6) and (out > -1).all()  # ELU output
    assert not any(p.requires_grad for p in net.backbone.stem.parameters())
    assert not any(p.requires_grad for p in net.backbone.layer1.parameters())
    convs = [m for m in net.backbone.layer2.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert convs and all(m.weight.requires_grad for m in convs)
    # PSA's train(): every BatchNorm in eval mode with weight and bias frozen.
    assert not any(p.requires_grad for m in norms for p in m.parameters())
    groups = psa.parameter_groups(net, lr=0.1, new_lr_mult=10, weight_decay=5e-4)
    # ResNet convolutions and the head have no bias; frozen BatchNorm has no parameters
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(0.1, 5e-4), (1.0, 5e-4)]
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in net.parameters())
    assert {id(p) for p in groups[1]["params"]} == {id(m.weight) for m in net.new_layers()}


def test_color_jitter_is_fixed_by_the_rng_and_off_at_zero():
    img = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    a = psa.color_jitter(img, np.random.default_rng(5), 0.3, 0.3, 0.3, 0.1)
    b = psa.color_jitter(img, np.random.default_rng(5), 0.3, 0.3, 0.3, 0.1)
    assert a.dtype == np.uint8 and np.array_equal(a, b) and not np.array_equal(a, img)
    np.testing.assert_array_equal(psa.color_jitter(img, np.random.default_rng(5), 0, 0, 0, 0), img)


# -- the rules on the tiny dataset -------------------------------------------------------

@pytest.fixture
def psa_case(tiny_voc, tmp_path, config):
    """The tiny VOC fixture with CAMs equal to its objects, and a small PSA config."""
    info = prepare_dataset(tiny_voc, ["a", "b", "c"], ["train_aug", "train", "val"])
    dataset_json = tmp_path / "dataset.json"
    info.to_json(dataset_json)
    records = []
    for image_id in info.ids("train_aug"):
        gt = read_label(info.layout.aug_mask(image_id))
        keys = np.array(info.labels["train_aug"][image_id], np.int64)
        high = np.stack([(gt == k).astype(np.float32) * 0.8 for k in keys]) if len(keys) \
            else np.zeros((0, *gt.shape), np.float32)
        records.append((image_id, CamRecord(keys=keys, cam=high[:, ::4, ::4], high_res=high)))
    cams = tmp_path / "cams.h5"
    write_cams(cams, iter(records), total=len(records), attrs={})
    p = copy.deepcopy(psa.PSA_DEFAULTS)
    p["train"].update(backbone="classifier", crop=16, batch_size=3, epochs=2, radius=3)
    p["random_walk"].update(logt=3)
    # The rules' explicit arguments: a fixed preset threshold, no tuning split.
    run = {"train_split": "train_aug", "threshold": 0.15}
    train = {"train_split": "train_aug", "model": config["model"], "seed": 0, "device": "cpu",
             "amp": "bf16", "checks": None}
    masks = {"split": "train_aug", "threshold": 0.15, "device": "cpu", "amp": "bf16"}
    return p, info, dataset_json, cams, (run, train, masks)


def test_psa_labels_train_and_masks_on_the_tiny_dataset(psa_case, tmp_path):
    from esol.models.esol_net import Arch, ESOLNet

    sec, info, dataset_json, cams, (run, train, masks_args) = psa_case
    scores = tmp_path / "psa_scores"
    assert psa.make_affinity_scores(sec, dataset_json, cams, scores, **run) == 3
    with np.load(scores / "a.npz") as z:
        assert z["la"].shape == z["ha"].shape == (2, 12, 16) and z["la"].dtype == np.uint8
        assert z["keys"].tolist() == [1]
    # the dataset's stride-8 labels: 16 x 16 crop of a 12 x 16 image -> 2 x 2 cells
    ds = psa.PSADataset(info, "train_aug", scores, crop=16, seed=0)
    sample = ds[0]
    assert sample["img"].shape == (3, 16, 16) and sample["label"].shape == (2, 2)
    assert set(sample["label"].unique().tolist()) <= {0, 1, 255}
    # 12 of 16 rows are image: the other 4 rows are padded black (PSA crops before it
    # normalises), i.e. the normalised value of colour 0
    black = torch.from_numpy(psa._BLACK)[:, None, None]
    assert int(torch.isclose(sample["img"], black).all(0).sum()) >= 4 * 16

    torch.manual_seed(0)
    classifier = tmp_path / "classifier.pt"
    torch.save(ESOLNet(Arch(num_classes=3, depth=18, frozen_bn=False, frozen_stages=0)).checkpoint(),
               classifier)
    model = tmp_path / "psa.pt"
    history = psa.train_psa(sec, dataset_json, scores, classifier, model, tmp_path / "psa.csv",
                            **train)
    assert len(history) == 2 and all(np.isfinite(r["loss"]) for r in history)
    assert {"bg_loss", "fg_loss", "neg_loss"} <= set(history[0])
    assert model.is_file() and not (tmp_path / "psa.pt.partial").exists()
    masks = tmp_path / "masks"
    assert psa.make_psa_masks(sec, dataset_json, model, cams, masks, **masks_args) == 3
    for image_id in ("a", "b", "c"):
        mask = read_label(masks / f"{image_id}.png")
        assert mask.shape == (12, 16)
        assert set(np.unique(mask)) <= {0, *info.labels["train_aug"][image_id]}
    assert read_label(masks / "c.png").max() == 0  # no class, no mask


def test_missing_psa_section_and_bad_crop_are_one_clear_error(psa_case, tmp_path):
    from esol.utils import ConfigError

    sec, info, dataset_json, cams, _ = psa_case
    with pytest.raises(ConfigError, match="no 'psa' section"):
        psa.psa_section({"irn": {}})
    with pytest.raises(ConfigError, match="psa.train.crop"):
        psa.PSADataset(info, "train_aug", tmp_path, crop=20)


def test_affinity_scores_resume_from_the_partial_folder(psa_case, tmp_path, monkeypatch):
    """An interrupted ``psa_labels`` run keeps what it wrote: a file already in
    ``<out>.partial`` (made from the same inputs) is not recomputed, the others are, and
    the folder is renamed."""
    sec, info, dataset_json, cams, (run, _, _) = psa_case
    out = tmp_path / "scores"
    partial = tmp_path / "scores.partial"
    one = psa._scores_one

    def killed_at_b(image_id):
        if image_id == "b":
            raise RuntimeError("killed")
        return one(image_id)

    monkeypatch.setattr(psa, "_scores_one", killed_at_b)
    with pytest.raises(RuntimeError, match="killed"):
        psa.make_affinity_scores(sec, dataset_json, cams, out, **run)
    monkeypatch.setattr(psa, "_scores_one", one)
    assert (partial / "a.npz").is_file() and not out.exists()
    np.savez(partial / "a.npz", la=np.zeros((2, 12, 16), np.uint8), ha=np.zeros((2, 12, 16), np.uint8),
             keys=np.array([1]))
    (partial / ".a.npz.tmp").write_bytes(b"half")  # a killed run's temporary file
    psa.make_affinity_scores(sec, dataset_json, cams, out, **run)
    assert sorted(p.name for p in out.iterdir()) == ["a.npz", "b.npz", "c.npz"]
    with np.load(out / "a.npz") as z:
        assert z["la"].max() == 0  # kept, not recomputed

def test_train_psa_stops_when_its_affinities_are_constant(psa_case, tmp_path, monkeypatch):
    """The learning check (IRN's on its boundary maps, esol.learning): an AffinityNet whose
    features are the same everywhere gives one affinity for every pair, and train_psa
    stops naming the stage and the config key."""
    from esol.learning import LearningError
    from esol.models.esol_net import Arch, ESOLNet

    sec, info, dataset_json, cams, (run, train, _) = psa_case
    scores = tmp_path / "scores"
    psa.make_affinity_scores(sec, dataset_json, cams, scores, **run)
    classifier = tmp_path / "classifier.pt"
    torch.save(ESOLNet(Arch(num_classes=3, depth=18, frozen_bn=False, frozen_stages=0)).checkpoint(),
               classifier)
    checks = {"enabled": True, "max_constant_boundary_share": 0.5}
    sec = copy.deepcopy(sec)
    sec["train"]["epochs"] = 1
    psa.train_psa(sec, dataset_json, scores, classifier, tmp_path / "ok.pt",
                  **dict(train, checks=checks))  # random features: affinities vary, passes
    forward = psa.AffinityNet.forward
    monkeypatch.setattr(psa.AffinityNet, "forward",
                        lambda self, x: torch.zeros_like(forward(self, x)) + 0 * forward(self, x))
    with pytest.raises(LearningError, match=r"^psa: .*checks.max_constant_boundary_share"):
        psa.train_psa(sec, dataset_json, scores, classifier, tmp_path / "flat.pt",
                      **dict(train, checks=checks))
