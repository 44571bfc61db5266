"""Metrics against numbers computed by hand (docs/method.md: the metrics and the 255 rule)."""

import numpy as np
import pytest

from esol import metrics


@pytest.fixture
def toy():
    # 3 classes (0 = background), 10 pixels + 2 ignored. By hand:
    #            pred 0  1  2
    # gt 0          3  1  0
    # gt 1          1  2  0
    # gt 2          0  1  2
    gt = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 255, 255])
    pred = np.array([0, 0, 0, 1, 0, 1, 1, 1, 2, 2, 1, 2])
    return gt, pred


def test_confusion_matrix_by_hand(toy):
    conf = metrics.confusion_matrix(*toy, n=3)
    assert conf.tolist() == [[3, 1, 0], [1, 2, 0], [0, 1, 2]]


def test_iou_miou_precision_recall_by_hand(toy):
    conf = metrics.confusion_matrix(*toy, n=3)
    # IoU_0 = 3/(4+4-3) = 0.6; IoU_1 = 2/(3+4-2) = 0.4; IoU_2 = 2/(3+2-2) = 2/3
    np.testing.assert_allclose(metrics.iou(conf), [0.6, 0.4, 2 / 3])
    assert metrics.mean_iou(conf) == pytest.approx((0.6 + 0.4 + 2 / 3) / 3)
    # Foreground TP = 2 + 2 = 4; predicted fg = 1+2+1 + 0+0+2 = 6; gt fg = 3 + 3 = 6.
    p, r = metrics.foreground_precision_recall(conf)
    assert p == pytest.approx(4 / 6) and r == pytest.approx(4 / 6)
    assert metrics.pixel_accuracy(conf) == pytest.approx(7 / 10)


def test_iou_absent_class_is_nan_and_skipped():
    conf = np.array([[5, 0, 0], [0, 2, 0], [0, 0, 0]])
    ious = metrics.iou(conf)
    assert np.isnan(ious[2])
    assert metrics.mean_iou(conf) == pytest.approx(1.0)


def test_thresholds_inclusive_and_exact():
    t = metrics.thresholds_from(0.05, 0.60, 0.01)
    assert len(t) == 56 and t[0] == 0.05 and t[-1] == 0.60 and 0.3 in t


def _irn_reference(gt, cams, keys, thresholds, n):
    """IRN's eval_cam: pad a background channel at t, argmax, map through keys."""
    out = []
    for t in thresholds:
        padded = np.concatenate([np.full((1, *gt.shape), t, np.float32), cams])
        k = np.concatenate([[0], keys]).astype(np.int64)
        out.append(metrics.confusion_matrix(gt, k[padded.argmax(0)], n))
    return np.stack(out)


def test_seed_sweep_by_hand():
    # One image, one class (key 2 of 2). cam values 0.2, 0.5, 0.8 on three fg pixels
    # and 0.5 on one bg pixel. At t=0.4: pred = [0, 2, 2, 2] for gt [2, 2, 2, 0].
    sweep = metrics.SeedSweep(2, [0.1, 0.4, 0.5, 0.9])
    gt = np.array([[2, 2, 2, 0]])
    cam = np.array([[[0.2, 0.5, 0.8, 0.5]]], np.float32)
    sweep.add(gt, cam, np.array([2]))
    confs = sweep.confusions()
    assert confs[0].tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 3]]  # t=0.1: all fg
    assert confs[1].tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 2]]  # t=0.4
    assert confs[2].tolist() == [[1, 0, 0], [0, 0, 0], [2, 0, 1]]  # t=0.5: ties go to bg
    assert confs[3].tolist() == [[1, 0, 0], [0, 0, 0], [3, 0, 0]]  # t=0.9: all bg


def test_seed_sweep_matches_irn_on_random_maps():
    rng = np.random.default_rng(1)
    thresholds = metrics.thresholds_from(0.05, 0.6, 0.01)
    sweep = metrics.SeedSweep(4, thresholds)
    ref = 0
    for _ in range(6):
        gt = rng.integers(0, 5, (9, 11))
        gt[rng.random(gt.shape) < 0.1] = 255
        keys = np.sort(rng.choice(np.arange(1, 5), rng.integers(1, 4), replace=False))
        cams = rng.random((len(keys), 9, 11)).round(2).astype(np.float32)
        sweep.add(gt, cams, keys)
        ref = ref + _irn_reference(gt, cams, keys, thresholds, 5)
    np.testing.assert_array_equal(sweep.confusions(), ref)


def test_seed_sweep_image_without_classes_is_all_background():
    sweep = metrics.SeedSweep(2, [0.1, 0.5])
    sweep.add(np.array([[0, 1]]), np.zeros((0, 1, 2), np.float32), np.array([], np.int64))
    assert sweep.confusions()[1].tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
