"""Seed CRF and IR labels (IRN's crf_inference_label, cam_to_ir_label), label folders,
their evaluation and Table 1."""

import json

import numpy as np
import pytest
from scipy import ndimage

from esol.cam import CamRecord, write_cams
from esol.crf import crf_inference_label, crf_label, ir_label, threshold_indices
from esol.data.voc import prepare_dataset, read_label, write_label
from esol.labeldir import LabelDir
from esol.refine import (crf_seeds, evaluate_label_dir, make_ir_labels, seed_threshold,
                         table1_csv, table1_markdown, table1_rows)
from esol.utils import ConfigError, DatasetError

IRN_CRF = {"iterations": 10, "gt_prob": 0.7, "gaussian": {"sxy": 3, "compat": 3},
           "bilateral": {"sxy": 50, "srgb": 5, "compat": 10}}


def _disc_scene(h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image of a red disc on blue (mild noise) and its true label map."""
    yy, xx = np.mgrid[:h, :w]
    truth = ((yy - 22) ** 2 + (xx - 30) ** 2 < 14 ** 2).astype(np.int64)
    rng = np.random.default_rng(0)
    colours = np.array([[40, 120, 200], [200, 60, 60]], np.float64)
    image = colours[truth] + rng.normal(0, 8, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), truth


def test_crf_repairs_a_noisy_unary_along_the_true_edges():
    image, truth = _disc_scene()
    rng = np.random.default_rng(1)
    noisy = np.where(rng.random(truth.shape) < 0.3, 1 - truth, truth)
    image.setflags(write=False)  # as PIL hands images over
    out = crf_inference_label(image, noisy, 2, IRN_CRF)
    edge = ndimage.binary_dilation(truth, iterations=2) & ~ndimage.binary_erosion(truth, iterations=2)
    acc = lambda pred, where=np.ones_like(truth, bool): float((pred == truth)[where].mean())  # noqa: E731
    assert acc(noisy) == pytest.approx(0.70, abs=0.02)
    assert acc(out) > 0.99  # the noise is gone
    assert acc(out, edge) > 0.95 > acc(noisy, edge) + 0.2  # and the labels follow the edges


def test_crf_keeps_a_single_label():
    image, _ = _disc_scene()
    assert crf_inference_label(image, np.zeros((48, 64), np.int64), 1, IRN_CRF).max() == 0


def test_threshold_indices_puts_background_first_and_wins_ties():
    cams = np.array([[[0.5, 0.2, 0.3]], [[0.1, 0.25, 0.3]]], np.float32)
    assert threshold_indices(cams, 0.3).tolist() == [[1, 0, 0]]
    assert threshold_indices(cams, 0.2).tolist() == [[1, 2, 1]]


def _three_bands(h: int = 40, w: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Three flat colour bands and one class map: 0.9 (left), 0.2 (middle), 0.01 (right).

    (On one flat colour the bilateral kernel, sxy 50, would join the bands into one.)"""
    image = np.full((h, w, 3), 128, np.uint8)
    image[:, : w // 3] = (200, 40, 40)
    image[:, 2 * w // 3:] = (40, 40, 200)
    cam = np.full((1, h, w), 0.01, np.float32)
    cam[0, :, : w // 3] = 0.9
    cam[0, :, w // 3: 2 * w // 3] = 0.2
    return image, cam


def test_ir_label_confident_regions_and_the_ignored_band():
    image, cam = _three_bands()
    label = ir_label(image, cam, np.array([4]), conf_fg=0.30, conf_bg=0.05, cfg=IRN_CRF)
    # Interiors, 3 pixels away from where the CRF may move the band edges:
    assert np.all(label[:, :17] == 4)  # above conf_fg: the class
    assert np.all(label[:, 23:37] == 255)  # between conf_bg and conf_fg: ignored
    assert np.all(label[:, 43:] == 0)  # below conf_bg: background
    assert set(np.unique(label)) == {0, 4, 255}
    seed = crf_label(image, cam, np.array([4]), 0.15, IRN_CRF)  # the seed CRF: no band
    assert set(np.unique(seed)) == {0, 4} and np.all(seed[:, :37] == 4)


# -- rules on a small dataset -----------------------------------------------------------

@pytest.fixture
def refine_case(tiny_voc, tmp_path):
    """The tiny VOC fixture, prepared, with CAMs equal to the ground truth's objects."""
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
    cfg = {"dataset": {"train_split": "train_aug"},
           "refine": {"seed_threshold": 0.5, "crf": IRN_CRF},
           "irn": {"labels": {"conf_fg": 0.3, "conf_bg": 0.05}}}
    return cfg, info, dataset_json, cams


def test_crf_seeds_in_processes_equal_one_process(refine_case, tmp_path):
    cfg, info, dataset_json, cams = refine_case
    one, two = tmp_path / "one", tmp_path / "two"
    assert crf_seeds(cfg, dataset_json, cams, "train", None, one, threads=1) == 0.5
    crf_seeds(cfg, dataset_json, cams, "train", None, two, threads=2)
    assert sorted(p.name for p in one.iterdir()) == ["a.png", "b.png"]
    for name in ("a.png", "b.png"):
        assert np.array_equal(read_label(one / name), read_label(two / name))
    assert not (tmp_path / "one.partial").exists()


def test_ir_labels_cover_the_training_split(refine_case, tmp_path):
    cfg, info, dataset_json, cams = refine_case
    out = tmp_path / "ir"
    assert make_ir_labels(cfg, dataset_json, cams, out, threads=2) == 3
    assert sorted(p.stem for p in out.iterdir()) == ["a", "b", "c"]
    assert read_label(out / "c.png").max() == 0  # no object: all confident background
    bad = dict(cfg, irn={"labels": {"conf_fg": 0.05, "conf_bg": 0.3}})
    with pytest.raises(ConfigError, match="conf_bg"):
        make_ir_labels(bad, dataset_json, cams, tmp_path / "bad")


def test_label_dir_resumes_and_drops_leftovers(tmp_path):
    target = LabelDir(tmp_path / "masks", {"cams": "x"})
    write_label(target.partial / "a.png", np.zeros((2, 2), np.uint8))
    (target.partial / ".b.png.tmp1.png").write_bytes(b"half")  # a killed writer's temp file
    again = LabelDir(tmp_path / "masks", {"cams": "x"})
    assert again.todo(["a", "b"]) == ["b"]
    write_label(again.partial / "b.png", np.zeros((2, 2), np.uint8))
    again.finish()
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["a.png", "b.png"]
    assert not again.partial.exists()


def test_evaluate_label_dir_against_ground_truth(refine_case, tmp_path):
    _, info, _, _ = refine_case
    out = tmp_path / "pred"
    out.mkdir()
    for image_id in info.ids("train"):
        gt = read_label(info.layout.gt_mask(image_id))
        write_label(out / f"{image_id}.png", np.where(gt == 255, 0, gt))
    summary = evaluate_label_dir(out, info, "train")
    assert summary["miou"] == 1.0 and summary["precision"] == 1.0 and summary["recall"] == 1.0
    assert summary["images"] == 2 and summary["per_class_iou"]["a"] == 1.0
    write_label(out / "b.png", np.zeros((12, 16), np.uint8))  # b's two objects missed
    summary = evaluate_label_dir(out, info, "train")
    assert summary["per_class_iou"]["b"] == 0.0 and summary["recall"] < 1.0
    (out / "a.png").unlink()
    with pytest.raises(DatasetError, match="a.png"):
        evaluate_label_dir(out, info, "train")


def test_seed_threshold_best_or_fixed(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"threshold": 0.37, "miou": 0.5}))
    assert seed_threshold({"seed_threshold": "best"}, seed) == 0.37
    assert seed_threshold({"seed_threshold": 0.15}, seed) == 0.15
    with pytest.raises(DatasetError, match="missing.json"):
        seed_threshold({"seed_threshold": "best"}, tmp_path / "missing.json")


def test_table1_rows_markdown_and_csv(tmp_path):
    paths = {}
    for method, values in {"cam": (0.48, 0.55, 0.66), "esol": (0.53, 0.61, 0.69)}.items():
        for stage, miou, t in zip(("seed", "crf", "mask"), values, (0.2, 0.2, 0.25), strict=True):
            p = tmp_path / f"{method}_{stage}.json"
            p.write_text(json.dumps({"miou": miou, "threshold": t, "split": "train", "images": 9}))
            paths[method, stage] = p
    rows = table1_rows(["cam", "esol"], *([paths[m, s] for m in ("cam", "esol")]
                                          for s in ("seed", "crf", "mask")))
    md = table1_markdown(rows)
    assert "| `cam` | 48.0 | 55.0 | 66.0 | 0.20 | 0.25 |" in md
    assert "| `esol` | 53.0 | 61.0 | 69.0 |" in md and "(9 images)" in md
    csv = table1_csv(rows).splitlines()
    assert csv[0].startswith("method,seed_miou,crf_miou,mask_miou")
    assert csv[2].startswith("esol,0.53,0.61,0.69")


def test_dir_digest_follows_names_and_content(tmp_path):
    from esol.labeldir import dir_digest

    write_label(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    first = dir_digest(tmp_path)
    (tmp_path / "notes.txt").write_text("not a label")
    assert dir_digest(tmp_path) == first  # only the PNGs count
    write_label(tmp_path / "a.png", np.ones((2, 2), np.uint8))
    assert dir_digest(tmp_path) != first


def test_train_irn_then_pseudo_masks_under_bf16(refine_case, tmp_path, config):
    """The two IRN rules on the tiny fixture, autocast to bfloat16 (as the demo runs):
    finite losses, a checkpoint, a pseudo mask per training image with valid values."""
    import torch

    from esol.irn.stage import make_pseudo_masks, train_irn
    from esol.models.esol_net import Arch, ESOLNet

    cfg0, info, dataset_json, cams = refine_case
    torch.manual_seed(0)
    classifier = tmp_path / "classifier.pt"
    arch = Arch(num_classes=3, depth=18, frozen_bn=False, frozen_stages=0)
    torch.save(ESOLNet(arch).checkpoint(), classifier)
    cfg = dict(config, amp="bf16", device="cpu", dataset=dict(config["dataset"], **cfg0["dataset"]),
               refine=dict(config["refine"], **cfg0["refine"]))
    cfg["irn"] = dict(config["irn"], labels=cfg0["irn"]["labels"],
                      train=dict(config["irn"]["train"], crop=16, batch_size=3, epochs=2, radius=3),
                      random_walk=dict(config["irn"]["random_walk"], exp_times=3))
    labels = tmp_path / "ir"
    seed = tmp_path / "seed.json"
    seed.write_text('{"threshold": 0.4}')  # calibrate_to from config.yaml applies
    make_ir_labels(cfg, dataset_json, cams, labels, seed_json=seed)
    model = tmp_path / "irn.pt"
    history = train_irn(cfg, dataset_json, labels, classifier, model, tmp_path / "irn.csv")
    assert len(history) == 2 and all(np.isfinite(r["loss"]) for r in history)
    assert {"pos_aff", "neg_aff", "dp_fg", "dp_bg"} <= set(history[0])
    assert model.is_file() and not (tmp_path / "irn.pt.partial").exists()
    masks = tmp_path / "masks"
    assert make_pseudo_masks(cfg, dataset_json, model, cams, masks, seed_json=seed) == 3
    for image_id in ("a", "b", "c"):
        mask = read_label(masks / f"{image_id}.png")
        assert mask.shape == (12, 16)
        assert set(np.unique(mask)) <= {0, *info.labels["train_aug"][image_id]}
    assert read_label(masks / "c.png").max() == 0  # no class, no mask


def test_calibration_gamma_maps_the_best_seed_threshold_to_the_reference(tmp_path):
    from esol.refine import calibrate, calibration_gamma

    seed = tmp_path / "seed.json"
    seed.write_text('{"threshold": 0.5}')
    # 0.5 ** g = 0.25  ->  g = 2; the map is squared, its ranking kept.
    assert calibration_gamma(0.25, seed) == pytest.approx(2.0)
    cams = np.array([[0.0, 0.5, 1.0]], np.float32)
    np.testing.assert_allclose(calibrate(cams, 2.0), [[0.0, 0.25, 1.0]])
    assert calibration_gamma(None, None) == 1.0
    assert calibrate(cams, 1.0) is cams
    seed.write_text('{"threshold": 1.0}')
    with pytest.raises(DatasetError, match="seed.json"):
        calibration_gamma(0.15, seed)
