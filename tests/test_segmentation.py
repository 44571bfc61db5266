"""Segmentation data, multi-scale + flip inference, dense CRF, evaluation, submission."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from esol.data import transforms as T
from esol.data.voc import prepare_dataset, read_label, write_label
from esol.crf import DEEPLAB_CRF, crf_argmax, crf_probs
from esol.segmentation.data import LabelSource, SegmentationDataset
from esol.segmentation.evaluate import evaluate_segmentation
from esol.engine import fingerprint
from esol.labeldir import STAMP
from esol.segmentation.predict import (multiscale_probs, predict_split, prediction_inputs,
                                      write_submission)
from esol.utils import DatasetError


class ConstantNet(torch.nn.Module):
    """Logits that ignore the image: the same class scores at every pixel."""

    def __init__(self, scores=(0.3, 2.0, -1.0)):
        super().__init__()
        self.scores = torch.tensor(scores)

    def forward(self, x):
        return self.scores[None, :, None, None].expand(x.shape[0], -1, *x.shape[2:]).clone()


class ColourNet(torch.nn.Module):
    """Logits = 4 x the normalised colour channels: a prediction that follows the image."""

    def forward(self, x):
        return 4 * x


def _info(tiny_voc):
    return prepare_dataset(tiny_voc, ["a", "b", "c"], ["train_aug", "train", "val"])


def test_multiscale_flip_on_a_constant_model_equals_single_scale():
    img = np.random.default_rng(0).integers(0, 255, (21, 30, 3), dtype=np.uint8)
    net = ConstantNet()
    single = multiscale_probs(net, img, [1.0], flip=False)
    multi = multiscale_probs(net, img, [0.5, 0.75, 1.0, 1.25, 1.5], flip=True)
    assert multi.shape == (3, 21, 30)
    torch.testing.assert_close(multi, single)
    torch.testing.assert_close(single[:, 0, 0], torch.tensor([0.3, 2.0, -1.0]).softmax(0))


def test_flipped_pass_is_flipped_back():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)
    net = ColourNet()
    x = torch.from_numpy(T.to_chw(T.normalize(img)))[None]
    expected = net(x).softmax(1)[0]
    # The mirror's prediction, flipped back, is the image's own: the average equals it.
    torch.testing.assert_close(multiscale_probs(net, img, [1.0], flip=True), expected)
    # Two scales: the mean of each scale's probabilities resized to the image.
    half = torch.from_numpy(T.to_chw(T.normalize(T.rescale(img, 0.5))))[None]
    p_half = F.interpolate(net(half), size=(16, 24), mode="bilinear", align_corners=False).softmax(1)[0]
    torch.testing.assert_close(multiscale_probs(net, img, [1.0, 0.5], flip=False),
                               (expected + p_half) / 2)


def test_dense_crf_returns_probabilities_and_removes_an_isolated_weak_pixel():
    img = np.zeros((20, 20, 3), np.uint8)
    img[:, 10:] = 200
    probs = np.zeros((2, 20, 20), np.float32)
    probs[0, :, :10], probs[1, :, :10] = 0.9, 0.1
    probs[0, :, 10:], probs[1, :, 10:] = 0.1, 0.9
    probs[:, 5, 5] = (0.45, 0.55)  # a weak vote for class 1 inside class 0's flat region
    q = crf_probs(img, probs, DEEPLAB_CRF)
    assert q.shape == (2, 20, 20)
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    assert probs.argmax(0)[5, 5] == 1
    label = crf_argmax(img, probs, DEEPLAB_CRF)
    assert label.dtype == np.uint8 and label[5, 5] == 0
    np.testing.assert_array_equal(label[:, :10], 0)
    np.testing.assert_array_equal(label[:, 10:], 1)


def test_label_source_gt_and_pseudo_masks(tiny_voc, tmp_path):
    info = _info(tiny_voc)
    gt = LabelSource(info, None)
    assert gt.path("a").parent.name == "SegmentationClassAug"
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    write_label(pseudo / "a.png", np.ones((12, 16), np.uint8))
    with pytest.raises(DatasetError, match=r"lacks 2 of the 3 train_aug images, e\.g\. .*b\.png"):
        SegmentationDataset(info, "train_aug", LabelSource(info, pseudo), (1, 1), 16)
    write_label(pseudo / "b.png", np.ones((11, 16), np.uint8))
    write_label(pseudo / "c.png", np.full((12, 16), 7, np.uint8))
    ds = SegmentationDataset(info, "train_aug", LabelSource(info, pseudo), (1, 1), 16)
    assert (ds[0]["label"][ds[0]["label"] != 255] == 1).all()
    with pytest.raises(DatasetError, match="b.png is 16x11 but its image is 16x12"):
        ds[1]
    with pytest.raises(DatasetError, match="c.png holds value 7"):
        ds[2]
    with pytest.raises(DatasetError, match="pseudo-mask folder not found"):
        LabelSource(info, tmp_path / "nowhere")


def test_training_crops_pad_with_ignore(tiny_voc):
    info = _info(tiny_voc)
    ds = SegmentationDataset(info, "train_aug", LabelSource(info, None), (1.0, 1.0), 20, seed=3)
    item = ds[1]
    assert item["img"].shape == (3, 20, 20) and item["label"].shape == (20, 20)
    label = item["label"]
    # The 12x16 image sits inside the 20x20 crop; the rest is 255, and the object classes
    # of the Aug mask (no borders) survive.
    assert (label == 255).sum() == 20 * 20 - 12 * 16
    assert set(label.unique().tolist()) == {0, 2, 3, 255}
    ds.set_epoch(0)
    torch.testing.assert_close(ds[1]["img"], item["img"])  # fixed by (seed, epoch, index)


def _hand_predictions(folder: Path):
    """Predictions for val image c (all background in the ground truth) and train a, b."""
    folder.mkdir(parents=True)
    c = np.zeros((12, 16), np.uint8)
    c[0:3, 0:4] = 1  # 12 pixels wrongly class 1
    write_label(folder / "c.png", c)
    return folder


def test_eval_on_hand_made_predictions(tiny_voc, tmp_path):
    info = _info(tiny_voc)
    ds_json = tmp_path / "dataset.json"
    info.to_json(ds_json)
    raw = _hand_predictions(tmp_path / "raw")
    crf = tmp_path / "crf"
    crf.mkdir()
    write_label(crf / "c.png", np.zeros((12, 16), np.uint8))
    out = tmp_path / "val.json"
    result = evaluate_segmentation(ds_json, "val", raw, crf, out, source="gt")
    # val = [c]: 192 background pixels; raw predicts 12 of them as class 1.
    # IoU_bg = 180 / (192 + 180 - 180) = 0.9375, IoU_1 = 0 / (0 + 12 - 0) = 0, classes 2, 3 absent.
    assert result["raw"]["per_class_iou"] == {"background": 0.9375, "a": 0.0, "b": None, "c": None}
    assert result["raw"]["miou"] == pytest.approx((0.9375 + 0.0) / 2)
    assert result["crf"]["miou"] == 1.0 and result["crf"]["pixel_accuracy"] == 1.0
    assert json.loads(out.read_text())["raw"]["confusion"][0][:2] == [180, 12]


def test_eval_on_a_two_image_split_by_hand(tiny_voc, tmp_path):
    """train = [a, b]: a has class 1 (24 px, border 255 on 6 px), b has classes 2 and 3."""
    info = _info(tiny_voc)
    ds_json = tmp_path / "dataset.json"
    info.to_json(ds_json)
    pred = tmp_path / "pred"
    pred.mkdir()
    a = np.zeros((12, 16), np.uint8)
    a[2:6, 3:6] = 1  # 12 of the 24 class-1 pixels
    write_label(pred / "a.png", a)
    b = np.zeros((12, 16), np.uint8)
    b[5:10, 1:5] = 2  # class 2 exactly; class 3 missed (25 px as background)
    write_label(pred / "b.png", b)
    result = evaluate_segmentation(ds_json, "train", pred, pred, tmp_path / "t.json", source="x")
    # Background: gt 192-24-6 (a) + 192-20-25 (b) = 162 + 147 = 309 valid pixels, all predicted
    # bg; predicted bg also holds 12 (a, class 1) + 25 (b, class 3): IoU = 309 / (309 + 37).
    iou = result["raw"]["per_class_iou"]
    assert iou["background"] == pytest.approx(309 / 346)
    assert iou["a"] == pytest.approx(12 / 24) and iou["b"] == 1.0 and iou["c"] == 0.0
    assert result["raw"]["miou"] == pytest.approx((309 / 346 + 0.5 + 1.0 + 0.0) / 4)


def test_eval_names_a_prediction_of_the_wrong_size(tiny_voc, tmp_path):
    info = _info(tiny_voc)
    info.to_json(tmp_path / "d.json")
    bad = tmp_path / "bad"
    bad.mkdir()
    write_label(bad / "c.png", np.zeros((10, 16), np.uint8))
    with pytest.raises(DatasetError, match="c.png is"):
        evaluate_segmentation(tmp_path / "d.json", "val", bad, bad, tmp_path / "o.json", "gt")
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_predict_split_writes_every_image_and_resumes(tiny_voc, tmp_path, workers):
    info = _info(tiny_voc)
    raw, crf = tmp_path / "raw", tmp_path / "crf"
    # An interrupted run left one image done in the partial folders: it is not redone.
    (tmp_path / "raw.partial").mkdir()
    (tmp_path / "crf.partial").mkdir()
    marker = np.full((12, 16), 2, np.uint8)
    stamp = fingerprint(prediction_inputs(ColourNet(), info, "train_aug", [1.0, 0.5], True,
                                          DEEPLAB_CRF, None))
    for kind in ("raw", "crf"):
        write_label(tmp_path / f"{kind}.partial" / "a.png", marker)
        (tmp_path / f"{kind}.partial" / STAMP).write_text(stamp)
    n = predict_split(ColourNet(), info, "train_aug", raw, crf, [1.0, 0.5], True, DEEPLAB_CRF,
                      torch.device("cpu"), workers=workers)
    assert n == 3
    assert sorted(p.name for p in raw.iterdir()) == ["a.png", "b.png", "c.png"]
    assert sorted(p.name for p in crf.iterdir()) == ["a.png", "b.png", "c.png"]
    assert not (tmp_path / "raw.partial").exists() and not (tmp_path / "crf.partial").exists()
    np.testing.assert_array_equal(read_label(raw / "a.png"), marker)
    # The raw prediction is the argmax of the averaged probabilities.
    from esol.data.voc import read_image
    img = read_image(info.layout.image("b"))
    probs = multiscale_probs(ColourNet(), img, [1.0, 0.5], True).numpy()
    np.testing.assert_array_equal(read_label(raw / "b.png"), probs.argmax(0))
    np.testing.assert_array_equal(read_label(crf / "b.png"), crf_argmax(img, probs, DEEPLAB_CRF))


def test_submission_uses_voc_naming(tmp_path):
    crf = tmp_path / "crf"
    crf.mkdir()
    for i in ("2008_000001", "2008_000002"):
        write_label(crf / f"{i}.png", np.ones((4, 4), np.uint8))
    folder = write_submission(crf, ["2008_000001", "2008_000002"], "test", tmp_path / "sub")
    assert folder == tmp_path / "sub" / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    assert sorted(p.name for p in folder.iterdir()) == ["2008_000001.png", "2008_000002.png"]
    with pytest.raises(DatasetError, match="missing"):
        write_submission(crf, ["2008_000003"], "test", tmp_path / "sub2")
    assert not (tmp_path / "sub2").exists() and not (tmp_path / "sub2.partial").exists()


@pytest.mark.parametrize("scale", [0.5, 0.7, 0.75, 1.3, 1.5, 1.75])
def test_rescaled_label_stays_registered_with_its_image(scale):
    # Label = XOR of a step at column 7 and a step at row 5; image = label in grey. A
    # centre-aligned resize puts the image's 50% level exactly on the edges (symmetric
    # kernel), and centre-aligned nearest puts the label edge there too: they agree on
    # every pixel whose centre is not on an edge. OpenCV's INTER_NEAREST (top-left
    # aligned) moves the label edge by up to a pixel (IRN and deeplab-pytorch: PIL).
    ys, xs = np.mgrid[:12, :20]
    label = ((xs >= 7) ^ (ys >= 5)).astype(np.uint8)
    img = np.repeat(label[..., None] * 255, 3, axis=2).astype(np.uint8)
    rng = np.random.default_rng(0)
    out_img, out_label = T.random_scale(img, scale, scale, rng, label=label)
    assert out_img.shape[:2] == out_label.shape == (round(12 * scale), round(20 * scale))
    h, w = out_label.shape
    uy = (np.arange(h) + 0.5) * 12 / h  # input coordinate of each output pixel centre
    ux = (np.arange(w) + 0.5) * 20 / w
    clear = (np.abs(uy - 5)[:, None] > 0.05) & (np.abs(ux - 7)[None] > 0.05)
    agree = (out_img[..., 0] > 127) == (out_label == 1)
    assert agree[clear].all(), np.argwhere(~agree & clear)


def test_shrunk_images_are_antialiased():
    # IRN's images go through PIL bicubic, which widens its kernel by 1/scale when
    # shrinking; pixel noise at scale 0.5 keeps 41% of its standard deviation (a 2x2 box
    # average keeps 50%, OpenCV's INTER_CUBIC, which does not widen, 71%).
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    half = T.rescale(img, 0.5)
    assert half.shape == (32, 32, 3)
    assert half.astype(float).std() < 0.45 * img.astype(float).std()
    assert abs(half.astype(float).mean() - img.astype(float).mean()) < 2
