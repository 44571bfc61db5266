"""Learning checks (esol.learning): AP by hand, trivial baselines, and each stage's check
firing on a model that learned nothing."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import load_config
from esol.cam import CamRecord, write_cams
from esol.data import synthetic
from esol.data.voc import DatasetInfo, prepare_dataset, write_label
from esol.irn.net import IRNArch, IRNet
from esol.irn.stage import boundary_figures
from esol.learning import (LearningError, all_absent_accuracy, average_precision, bce_loss,
                           check_at_most, check_learned, checks_config, classifier_figures,
                           map_figures, mean_ap, per_class_ap, prior_loss, prior_map)
from esol.models.esol_net import Arch, ESOLNet
from esol.segmentation.predict import check_predictions
from esol.stages import (ClassifierMonitor, check_cam_file, check_sampler_stage, empty_map_share,
                         holdout_ids, score_images)

CHECKS = checks_config({})


# ------------------------------------------------------------------ AP by hand


def test_average_precision_hand_example():
    # Ranked: + - + -. Precision at the two positives: 1/1 and 2/3; AP = (1 + 2/3) / 2.
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # Order of the input does not matter, only the ranking.
    assert average_precision([0.6, 0.7, 0.9, 0.8], [0, 1, 1, 0]) == pytest.approx(5 / 6)
    # Ranked: - + - +: precisions 1/2 and 2/4; AP = 0.5.
    assert average_precision([0.9, 0.8, 0.7, 0.6], [0, 1, 0, 1]) == pytest.approx(0.5)
    assert average_precision([0.3, 0.2, 0.1], [1, 1, 0]) == pytest.approx(1.0)


def test_average_precision_ties_enter_together():
    # 0.5 and 0.5 tie: after 0.9 (P 1, R 1/2) both enter at once (P 2/3, R 1).
    assert average_precision([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # A constant score gives the prevalence, whatever the order of the labels.
    assert average_precision([0.2] * 5, [0, 1, 0, 0, 1]) == pytest.approx(2 / 5)
    assert math.isnan(average_precision([0.1, 0.2], [0, 0]))


def test_mean_ap_skips_classes_without_positives():
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.2, 0.5], [0.7, 0.3, 0.5], [0.6, 0.4, 0.5]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    ap = per_class_ap(scores, labels)
    # class 0 ranked + - + - (5/6); class 1: scores rise with the index, ranked + - + - too.
    np.testing.assert_allclose(ap[:2], [5 / 6, 5 / 6])
    assert math.isnan(ap[2])
    assert mean_ap(scores, labels) == pytest.approx(5 / 6)


# -------------------------------------------------------------------- baselines


def test_baselines_by_hand():
    labels = np.array([[1, 0], [0, 0]])
    assert all_absent_accuracy(labels) == 0.75
    # Class 0 prevalence 1/2: -log(1/2) on both images; class 1 prevalence 0: loss 0.
    assert prior_loss(labels) == pytest.approx(2 * math.log(2) / 4, abs=1e-6)
    assert prior_map(labels) == 0.5  # class 1 has no positive: left out


def test_bce_loss_is_the_classifiers_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=g) * 3
    labels = (torch.rand(5, 3, generator=g) > 0.5).float()
    assert bce_loss(logits.numpy(), labels.numpy()) == pytest.approx(
        F.multilabel_soft_margin_loss(logits, labels).item(), rel=1e-5)


def test_prior_figures_are_what_a_constant_classifier_scores():
    rng = np.random.default_rng(0)
    labels = (rng.random((40, 4)) < 0.3).astype(float)
    p = labels.mean(0)
    figs = classifier_figures(np.tile(np.log(p / (1 - p)), (40, 1)), labels)
    assert figs["map"] == pytest.approx(figs["prior_map"])
    assert figs["loss"] == pytest.approx(figs["prior_loss"])


# ------------------------------------------------------------------- the checks


def test_check_learned_names_stage_figures_key_and_causes():
    check_learned("classifier", {"map": 0.8, "prior_map": 0.3}, 0.05)  # quiet
    with pytest.raises(LearningError) as err:
        check_learned("classifier", {"map": 0.32, "prior_map": 0.3, "loss": 0.47}, 0.05)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("classifier: learned nothing usable: map 0.3200")
    assert "prior_map 0.3000" in msg and "checks.min_map_gain" in msg and "loss 0.47" in msg
    assert "Likely causes: too few optimiser steps" in msg
    with pytest.raises(LearningError):  # NaN never passes
        check_learned("classifier", {"map": float("nan"), "prior_map": 0.3}, 0.05)


def _tiny_dataset(tmp_path, n=12):
    cfg = copy.deepcopy(load_config())
    cfg["dataset"]["synthetic"].update(num_classes=2, image_size=[48, 56],
                                       counts={"train_aug": n, "train": 4, "val": 2, "test": 0})
    root = tmp_path / "data"
    names = synthetic.generate(root, cfg["dataset"]["synthetic"], seed=0)
    prepare_dataset(root, names, ["train_aug", "train"]).to_json(tmp_path / "d.json")
    cfg["device"], cfg["amp"] = "cpu", "fp32"
    return cfg, DatasetInfo.from_json(tmp_path / "d.json")


def test_classifier_with_zero_weights_fails_its_check(tmp_path):
    cfg, info = _tiny_dataset(tmp_path)
    net = ESOLNet(Arch(num_classes=2, depth=18, frozen_bn=False, frozen_stages=0))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    ids = info.labelled_ids("train_aug")
    logits, labels = score_images(net, info, "train_aug", ids, torch.device("cpu"))
    assert logits.shape == labels.shape == (len(ids), 2) and not logits.any()
    figs = classifier_figures(logits, labels, info.classes)
    assert figs["map"] == pytest.approx(figs["prior_map"])
    assert figs["label_accuracy"] == pytest.approx(figs["all_absent_accuracy"])
    assert net.training  # score_images restores the modes it found
    # Through the stage's monitor, as train_classifier calls it.
    monitor = ClassifierMonitor(net, info, cfg, _Ids(ids))
    with pytest.raises(LearningError, match=r"^classifier: learned nothing usable: map "):
        monitor.check(monitor.final())


class _Ids:
    def __init__(self, ids):
        self.ids = list(ids)


def test_a_classifier_that_ranks_well_passes():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 1]], float)
    check_learned("classifier", classifier_figures(labels * 4 - 2, labels), 0.05)


def test_holdout_is_deterministic_and_removed_from_training(tmp_path):
    ids = [f"i{k}" for k in range(20)]
    held = holdout_ids(ids, 0.25, seed=3)
    assert len(held) == 5 and held == holdout_ids(ids, 0.25, seed=3) and set(held) <= set(ids)
    assert holdout_ids(ids, 0.0, seed=3) == []
    cfg, info = _tiny_dataset(tmp_path)
    cfg["classifier"]["holdout"] = 0.25
    dataset = _Ids(info.labelled_ids("train_aug"))
    net = ESOLNet(Arch(num_classes=2, depth=18, frozen_bn=False, frozen_stages=0))
    monitor = ClassifierMonitor(net, info, cfg, dataset)
    assert len(monitor.holdout) == 3 and not set(monitor.holdout) & set(dataset.ids)
    assert len(dataset.ids) == 9
    record = {"epoch": 1}
    monitor.record(torch.zeros(2, 2), torch.tensor([[1.0, 0], [0, 1]]))
    monitor.on_epoch_end(record)
    assert {"map_train", "prior_map_train", "map_holdout", "prior_map_holdout",
            "all_absent_accuracy_holdout"} <= set(record)
    assert record["map_train"] == pytest.approx(0.5)  # ties: the prevalence
    assert any(k.startswith("ap_holdout_") for k in record)


def _cam_file(path, maps):
    records = ((f"i{k}", CamRecord(keys=np.array([1]), cam=m[None], high_res=m[None]))
               for k, m in enumerate(maps))
    write_cams(path, records, total=len(maps), attrs={})


def test_all_zero_cam_file_fails_its_check(tmp_path):
    _cam_file(tmp_path / "zero.h5", [np.zeros((4, 5), np.float32)] * 3)
    with pytest.raises(LearningError, match=r"^cam: .*uninformative_share 1 exceeds 0.5 "
                                            r"\(checks.max_empty_cam_share\)"):
        check_cam_file(tmp_path / "zero.h5", CHECKS)
    peaked = np.zeros((4, 5), np.float32)
    peaked[1, 2] = 1.0
    figs = check_cam_file(_cam_path(tmp_path, [peaked] * 3), CHECKS)
    assert figs == {"maps": 3, "empty_share": 0.0, "constant_share": 0.0, "uninformative_share": 0.0}


def _cam_path(tmp_path, maps):
    _cam_file(tmp_path / "ok.h5", maps)
    return tmp_path / "ok.h5"


def test_map_figures_by_hand():
    flat = np.full((3, 3), 0.7)
    peaked = np.zeros((3, 3))
    peaked[0, 0] = 1
    figs = map_figures([np.zeros((3, 3)), flat, peaked, peaked])
    assert figs == {"maps": 4, "empty_share": 0.25, "constant_share": 0.25, "uninformative_share": 0.5}


def test_offsets_that_never_moved_fail_the_sampler_check():
    with pytest.raises(LearningError, match=r"^expansion: .*offset_max 0 is below 1e-12 "
                                            r"\(checks.min_offset\)"):
        check_sampler_stage("expansion", [{"loss": -0.01, "offset_max": 0.0, "empty_maps": 0.0}], CHECKS)
    with pytest.raises(LearningError, match=r"^shrinkage: .*empty_maps 1 exceeds 0.5"):
        check_sampler_stage("shrinkage", [{"loss": 0.3, "offset_max": 0.5, "empty_maps": 1.0}], CHECKS)
    check_sampler_stage("expansion", [{"loss": -0.01, "offset_max": 0.3, "empty_maps": 0.0}], CHECKS)
    check_sampler_stage("shrinkage", [{"loss": 0.3, "empty_maps": 0.1}], CHECKS)  # no sampler
    check_sampler_stage("expansion", [], CHECKS)  # nothing trained in this variant


def test_empty_map_share_counts_present_classes_only():
    maps = torch.zeros(2, 2, 3, 3)
    maps[0, 0, 1, 1] = 2.0  # image 0, class 0: a peak
    maps[1, 1] = -1.0  # image 1, class 1: negative everywhere, ReLU zero
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # Present maps: (0,0) peaked, (1,0) zero, (1,1) zero -> 2 of 3 empty.
    assert empty_map_share(maps, labels) == pytest.approx(2 / 3)


def test_constant_boundary_map_fails_the_irn_check(tmp_path):
    _, info = _tiny_dataset(tmp_path, n=4)
    torch.manual_seed(0)
    net = IRNet(IRNArch(depth=18, frozen_bn=False))
    ids = info.ids("train_aug")[:3]
    figs = boundary_figures(net, info, ids, torch.device("cpu"))
    assert figs["uninformative_share"] == 0.0  # random weights still vary over the image
    with torch.no_grad():
        net.edge_out.weight.zero_()  # the boundary head ignores its features: sigmoid(bias)
    figs = boundary_figures(net, info, ids, torch.device("cpu"))
    assert figs["constant_share"] == 1.0
    with pytest.raises(LearningError, match=r"^irn: .*checks.max_constant_boundary_share"):
        check_at_most("irn", figs, "uninformative_share", 0.5, key="checks.max_constant_boundary_share")


def test_deeplab_predicting_one_class_fails_its_check(tmp_path):
    for k in range(3):
        write_label(tmp_path / f"i{k}.png", np.zeros((6, 7), np.uint8))
    ids = ["i0", "i1", "i2"]
    with pytest.raises(LearningError, match=r"^deeplab\[val\]: .*classes_predicted 1 is below 2 .*"
                                            r"Likely causes: the pseudo masks"):
        check_predictions(tmp_path, ids, CHECKS, "deeplab[val]")
    two = np.zeros((6, 7), np.uint8)
    two[:2] = 3
    write_label(tmp_path / "i1.png", two)
    figs = check_predictions(tmp_path, ids, CHECKS, "deeplab[val]")
    assert figs["classes_predicted"] == 2 and figs["top_class_share"] == pytest.approx(1 - 14 / 126)


# ------------------------------------------------------- a schedule that transfers


def test_warmup_then_poly_by_hand():
    from esol.engine import poly_lr, warmup_poly_lr

    # 4 warm-up steps from base/4 up to base, then poly decay as before.
    assert [warmup_poly_lr(0.1, s, 10, 0.9, 4) for s in range(4)] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert warmup_poly_lr(0.1, 5, 10, 0.9, 4) == pytest.approx(0.1 * 0.5 ** 0.9)
    assert warmup_poly_lr(0.1, 5, 10, 0.9, 0) == poly_lr(0.1, 5, 10, 0.9)


def test_min_steps_raise_the_epochs():
    from esol.stages import classifier_epochs

    c = {"epochs": 10, "batch_size": 16}
    assert classifier_epochs(c, 240) == 10  # no min_steps: the demo's 150 steps
    assert classifier_epochs(dict(c, min_steps=100), 240) == 10  # already 150 >= 100
    assert classifier_epochs(dict(c, min_steps=600), 240) == 40  # 15 steps per epoch, ceil(600 / 15)
    assert classifier_epochs(dict(c, min_steps=601), 240) == 41


def test_restarted_optimizer_starts_the_schedule_again():
    from esol.stages import restarted

    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([{"params": [w], "lr": 0.1}, {"params": [], "lr": 1.0, "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9, weight_decay=1e-4)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
        g["lr"] = 1e-6  # the end of a poly schedule
    w.sum().backward()
    opt.step()
    new = restarted(opt)
    assert [g["lr"] for g in new.param_groups] == [0.1, 1.0]
    assert new.param_groups[1]["weight_decay"] == 0.0 and new.defaults["momentum"] == 0.9
    assert not new.state  # momentum buffers cleared
    assert new.param_groups[0]["params"][0] is w


def test_extend_only_while_the_check_fails(tmp_path):
    cfg, info = _tiny_dataset(tmp_path)
    net = ESOLNet(Arch(num_classes=2, depth=18, frozen_bn=False, frozen_stages=0))
    monitor = ClassifierMonitor(net, info, cfg, _Ids(info.labelled_ids("train_aug")))
    bad, good = {"map": 0.5, "prior_map": 0.5}, {"map": 0.9, "prior_map": 0.5}
    assert monitor.extend(bad, 0, 3) and monitor.extend(bad, 1, 3)
    assert not monitor.extend(bad, 2, 3)  # rounds used up: the check then stops the stage
    assert not monitor.extend(good, 0, 3)
