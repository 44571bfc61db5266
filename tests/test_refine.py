"""Seed CRF and IR labels (IRN's crf_inference_label, cam_to_ir_label), label folders,
their evaluation and Table 1."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from esol.cam import CamRecord, write_cams
from esol.crf import crf_inference_label, crf_label, ir_label, threshold_indices
from esol.data.voc import prepare_dataset, read_label, write_label
from esol.labeldir import LabelDir
from esol.refine import (crf_seeds, crf_threshold, evaluate_label_dir, make_ir_labels,
                         oracle_threshold, preset_threshold, table1_csv, table1_markdown,
                         table1_rows)
from esol.utils import ConfigError, DatasetError

from conftest import write_voc_fixture

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
           "refine": {"threshold": 0.5, "crf": IRN_CRF},
           "irn": {"calibrate_to": None, "labels": {"conf_fg": 0.3, "conf_bg": 0.05}}}
    return cfg, info, dataset_json, cams


def test_crf_seeds_in_processes_equal_one_process(refine_case, tmp_path):
    cfg, info, dataset_json, cams = refine_case
    one, two = tmp_path / "one", tmp_path / "two"
    assert crf_seeds(cfg, dataset_json, cams, "train", "preset", None, one, threads=1) == 0.5
    crf_seeds(cfg, dataset_json, cams, "train", "preset", None, two, threads=2)
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
    bad = dict(cfg, irn={"calibrate_to": None, "labels": {"conf_fg": 0.05, "conf_bg": 0.3}})
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
    assert summary["ground_truth"]["masks"] == "SegmentationClass"
    assert summary["ground_truth"]["prediction_255"].startswith("counted as background")
    write_label(out / "b.png", np.zeros((12, 16), np.uint8))  # b's two objects missed
    summary = evaluate_label_dir(out, info, "train")
    assert summary["per_class_iou"]["b"] == 0.0 and summary["recall"] < 1.0
    (out / "a.png").unlink()
    with pytest.raises(DatasetError, match="a.png"):
        evaluate_label_dir(out, info, "train")


def test_oracle_and_preset_thresholds(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"threshold": 0.37, "miou": 0.5}))
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({"threshold": 0.22, "threshold_choice": "tuned on tune"}))
    assert oracle_threshold(seed) == 0.37
    assert preset_threshold({"threshold": 0.15}, tuned) == (0.15, "fixed in config (refine.threshold)")
    assert preset_threshold({"threshold": "tuned"}, tuned) == (0.22, "tuned on tune")
    cfg = {"refine": {"threshold": "tuned"}}
    assert crf_threshold(cfg, "oracle", seed)[0] == 0.37
    assert crf_threshold(cfg, "oracle", seed)[1].startswith("oracle")
    assert crf_threshold(cfg, "preset", tuned) == (0.22, "tuned on tune")
    with pytest.raises(ConfigError, match="refine.threshold is 'tuned'"):
        preset_threshold({"threshold": "tuned"}, None)
    with pytest.raises(DatasetError, match="missing.json"):
        oracle_threshold(tmp_path / "missing.json")


def _table1_jsons(tmp_path, method, seed, seed_preset, crf, crf_preset, mask, psa_mask=None):
    gt = {"split": "train", "masks": "SegmentationClass", "ground_truth_255": "ignored",
          "prediction_255": "counted as background"}
    files = {"seed": {"miou": seed, "threshold": 0.2, "split": "train", "images": 9,
                      "ground_truth": gt, "preset": {"miou": seed_preset, "threshold": 0.3,
                                                     "threshold_choice": "tuned on tune"}},
             "crf": {"miou": crf, "threshold": 0.2}, "crf_preset": {"miou": crf_preset, "threshold": 0.3},
             "mask": {"miou": mask, "threshold": 0.25, "threshold_choice": "fixed in config",
                      "ground_truth": gt}}
    if psa_mask is not None:
        files["psa_mask"] = {"miou": psa_mask, "threshold": None, "threshold_choice": "none: argmax",
                             "ground_truth": gt}
    paths = []
    for stage, data in files.items():
        p = tmp_path / f"{method}_{stage}.json"
        p.write_text(json.dumps(data))
        paths.append(p)
    return paths


def test_table1_rows_markdown_and_csv_label_oracle_and_preset(tmp_path):
    cam = _table1_jsons(tmp_path, "cam", 0.48, 0.47, 0.55, 0.54, 0.66)
    esol = _table1_jsons(tmp_path, "esol", 0.53, 0.50, 0.61, 0.60, 0.69)
    seeds, crfs, crfs_preset, masks = zip(cam, esol, strict=True)
    rows = table1_rows(["cam", "esol"], seeds, crfs, crfs_preset, {"irn": masks})
    md = table1_markdown(rows)
    assert ("| Method | Seed (oracle t) | Seed (preset t) | CRF (oracle t) | CRF (preset t) "
            "| Mask (IRN) | oracle t | preset t | mask bg (IRN) |") in md
    assert "| `cam` | 48.0 | 47.0 | 55.0 | 54.0 | 66.0 | 0.20 | 0.30 | 0.25 |" in md
    assert "| `esol` | 53.0 | 50.0 | 61.0 | 60.0 | 69.0 |" in md and "(9 images" in md
    assert "ground truth `SegmentationClass`" in md and "tuned on tune" in md
    assert "chosen with ground truth" in md and "counted as background" in md
    csv = table1_csv(rows).splitlines()
    assert csv[0].startswith("method,seed_miou_oracle,seed_miou_preset,crf_miou_oracle,"
                             "crf_miou_preset,mask_miou_irn,oracle_threshold,preset_threshold,"
                             "preset_threshold_choice")
    assert csv[2].startswith("esol,0.53,0.5,0.61,0.6,0.69,0.2,0.3,tuned on tune")
    assert "ground_truth" in csv[0] and "SegmentationClass" in csv[2]


def test_table1_has_one_mask_column_per_refiner_in_config_order(tmp_path):
    cam = _table1_jsons(tmp_path, "cam", 0.48, 0.47, 0.55, 0.54, 0.66, psa_mask=0.61)
    esol = _table1_jsons(tmp_path, "esol", 0.53, 0.50, 0.61, 0.60, 0.69, psa_mask=0.64)
    seeds, crfs, crfs_preset, irn, psa = zip(cam, esol, strict=True)
    rows = table1_rows(["cam", "esol"], seeds, crfs, crfs_preset, {"psa": psa, "irn": irn})
    md = table1_markdown(rows)
    # PSA has no background threshold: no "mask bg" column of its own
    assert ("| Method | Seed (oracle t) | Seed (preset t) | CRF (oracle t) | CRF (preset t) "
            "| Mask (PSA) | Mask (IRN) | oracle t | preset t | mask bg (IRN) |") in md
    assert "| `cam` | 48.0 | 47.0 | 55.0 | 54.0 | 61.0 | 66.0 | 0.20 | 0.30 | 0.25 |" in md
    assert "| `esol` | 53.0 | 50.0 | 61.0 | 60.0 | 64.0 | 69.0 |" in md
    assert "**Mask (PSA)**: PSA pseudo masks, background score none: argmax" in md
    csv = table1_csv(rows).splitlines()
    head = csv[0].split(",")
    assert head[5:7] == ["mask_miou_psa", "mask_miou_irn"]
    assert csv[1].split(",")[5:7] == ["0.61", "0.66"]
    with pytest.raises(ConfigError, match="refine.refiners"):
        table1_rows(["cam"], seeds[:1], crfs[:1], crfs_preset[:1], {})


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
    cfg["refine"]["threshold"] = 0.4  # calibrate_to from config.yaml applies
    labels = tmp_path / "ir"
    make_ir_labels(cfg, dataset_json, cams, labels)
    model = tmp_path / "irn.pt"
    history = train_irn(cfg, dataset_json, labels, classifier, model, tmp_path / "irn.csv")
    assert len(history) == 2 and all(np.isfinite(r["loss"]) for r in history)
    assert {"pos_aff", "neg_aff", "dp_fg", "dp_bg"} <= set(history[0])
    assert model.is_file() and not (tmp_path / "irn.pt.partial").exists()
    masks = tmp_path / "masks"
    assert make_pseudo_masks(cfg, dataset_json, model, cams, masks) == 3
    for image_id in ("a", "b", "c"):
        mask = read_label(masks / f"{image_id}.png")
        assert mask.shape == (12, 16)
        assert set(np.unique(mask)) <= {0, *info.labels["train_aug"][image_id]}
    assert read_label(masks / "c.png").max() == 0  # no class, no mask


def test_calibration_gamma_maps_the_preset_threshold_to_the_reference():
    from esol.refine import calibrate, calibration_gamma

    # 0.5 ** g = 0.25  ->  g = 2; the map is squared, its ranking kept.
    assert calibration_gamma(0.25, 0.5) == pytest.approx(2.0)
    cams = np.array([[0.0, 0.5, 1.0]], np.float32)
    np.testing.assert_allclose(calibrate(cams, 2.0), [[0.0, 0.25, 1.0]])
    assert calibration_gamma(None, 0.3) == 1.0
    assert calibrate(cams, 1.0) is cams
    with pytest.raises(DatasetError, match="preset threshold 1.0"):
        calibration_gamma(0.15, 1.0)


# -- no ground truth of the pseudo-labelled images reaches their labels ------------------
#
# Hand-computable case: every class map is 0.5 on its object and 0.25 elsewhere (both
# exact in the CAM file's float16). On the tuning split (images d, e) the seed is perfect
# for 0.25 <= t < 0.5 and a pixel is foreground only when its score is > t, so the
# sweep's best (lowest) threshold is 0.25 and IRN's calibration raises the maps to
# g = ln 0.15 / ln 0.25.

GRID = {"start": 0.05, "stop": 0.95, "step": 0.01}
GUARDED = {"dataset.train_split": "train_aug", "dataset.seed_split": "train",
           "segmentation.eval_split": "val"}


def _object(h: int, w: int, cls: int, box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = cls
    return m


def _cams_of(info, split: str, path) -> None:
    """0.5 on each present class's object, 0.25 elsewhere, from the (unperturbed) masks."""
    records = []
    for image_id in info.ids(split):
        gt = read_label(info.layout.aug_mask(image_id))
        keys = np.array(info.labels[split][image_id], np.int64)
        high = np.stack([np.where(gt == k, 0.5, 0.25).astype(np.float32) for k in keys])
        records.append((image_id, CamRecord(keys=keys, cam=high[:, ::4, ::4], high_res=high)))
    write_cams(path, iter(records), total=len(records), attrs={})


@pytest.fixture
def leak_case(tmp_path):
    masks = {"a": _object(12, 16, 1, (2, 8, 3, 10)), "b": _object(12, 16, 2, (4, 11, 6, 14)),
             "c": _object(12, 16, 3, (1, 6, 1, 7)), "v": _object(12, 16, 1, (3, 9, 2, 9)),
             "d": _object(12, 16, 2, (2, 9, 4, 12)), "e": _object(12, 16, 3, (5, 11, 2, 9))}
    splits = {"train_aug": ["a", "b", "c"], "train": ["a", "b"], "val": ["v"], "tune": ["d", "e"]}
    root = write_voc_fixture(tmp_path / "voc", masks, splits)
    info = prepare_dataset(root, ["a", "b", "c"], list(splits))
    dataset_json = tmp_path / "dataset.json"
    info.to_json(dataset_json)
    _cams_of(info, "train_aug", tmp_path / "train_aug.h5")
    _cams_of(info, "tune", tmp_path / "tune.h5")
    cfg = {"dataset": {"train_split": "train_aug", "seed_split": "train", "tuning_split": "tune"},
           "segmentation": {"eval_split": "val"},
           "refine": {"threshold": "tuned", "crf": IRN_CRF},
           "irn": {"calibrate_to": 0.15, "labels": {"conf_fg": 0.3, "conf_bg": 0.05}}}
    return cfg, info, root, dataset_json, tmp_path


def _training_side(cfg, dataset_json, tmp_path, tag):
    """What the workflow runs upstream of IRN: tune_threshold, then ir_labels."""
    from esol.refine import tune_threshold

    tuned = tune_threshold(tmp_path / "tune.h5", dataset_json, "tune", GUARDED, GRID, "m",
                           tmp_path / f"tuned_{tag}.json", tmp_path / f"tuned_{tag}.csv")
    out = tmp_path / f"ir_{tag}"
    make_ir_labels(cfg, dataset_json, tmp_path / "train_aug.h5", out,
                   threshold_json=tmp_path / f"tuned_{tag}.json")
    return tuned, {p.name: read_label(p) for p in sorted(out.iterdir())}


def test_tuned_threshold_and_gamma_by_hand(leak_case):
    from esol.refine import training_gamma

    cfg, info, _, dataset_json, tmp_path = leak_case
    tuned, _ = _training_side(cfg, dataset_json, tmp_path, "x")
    assert tuned["threshold"] == pytest.approx(0.25) and tuned["tuning_miou"] == 1.0
    assert tuned["threshold_choice"] == "tuned on tune" and tuned["images"] == 2
    assert tuned["ground_truth"]["masks"] == "SegmentationClass"
    gamma, t, how = training_gamma(cfg, info, tmp_path / "tuned_x.json")
    assert (t, how) == (pytest.approx(0.25), "tuned on tune")
    assert gamma == pytest.approx(np.log(0.15) / np.log(0.25))


def test_ir_labels_do_not_change_when_the_labelled_splits_ground_truth_changes(leak_case):
    """Blank every mask of the pseudo-labelled split (train_aug, hence train): the
    tuned threshold and every IR label stay bit-identical, while the oracle threshold on
    train moves from 0.25 to 0.50 (so a pipeline reading it would change its labels)."""
    from esol.evaluate import evaluate_seeds

    cfg, info, root, dataset_json, tmp_path = leak_case
    grid = np.round(np.arange(0.05, 0.951, 0.01), 6)
    oracle_before = evaluate_seeds(tmp_path / "train_aug.h5", info, "train", grid)[0]["threshold"]
    tuned_before, labels_before = _training_side(cfg, dataset_json, tmp_path, "before")
    for image_id in info.ids("train_aug"):
        for folder in ("SegmentationClass", "SegmentationClassAug"):
            write_label(root / folder / f"{image_id}.png", np.zeros((12, 16), np.uint8))
    oracle_after = evaluate_seeds(tmp_path / "train_aug.h5", info, "train", grid)[0]["threshold"]
    tuned_after, labels_after = _training_side(cfg, dataset_json, tmp_path, "after")
    assert (oracle_before, oracle_after) == (pytest.approx(0.25), pytest.approx(0.50))
    assert tuned_after["threshold"] == tuned_before["threshold"]
    assert labels_after.keys() == labels_before.keys() == {"a.png", "b.png", "c.png"}
    for name, label in labels_before.items():
        assert np.array_equal(label, labels_after[name]), name
    # The labels are not trivially insensitive: at the oracle's 0.50 they would differ
    # (the objects, 0.5 ** (ln 0.15 / ln 0.5) = 0.15, fall into the ignored band).
    leaky = dict(cfg, refine=dict(cfg["refine"], threshold=0.50))
    make_ir_labels(leaky, dataset_json, tmp_path / "train_aug.h5", tmp_path / "ir_leaky")
    assert not np.array_equal(read_label(tmp_path / "ir_leaky" / "a.png"), labels_before["a.png"])


def test_a_tuning_split_sharing_images_is_refused(leak_case):
    from esol.refine import check_tuning_split, training_gamma, tune_threshold

    cfg, info, root, dataset_json, tmp_path = leak_case
    check_tuning_split(info, "tune", GUARDED)  # disjoint: accepted
    # A tuning list that overlaps train_aug, train and val in turn.
    for shared, key in (("c", "dataset.train_split"), ("a", "dataset.train_split"),
                        ("v", "segmentation.eval_split")):
        bad = dict(info.splits, tune=["d", shared])
        bad_info = type(info)(root=info.root, classes=info.classes, splits=bad, labels=info.labels)
        with pytest.raises(ConfigError, match=rf"^dataset.tuning_split 'tune' shares 1 images with "
                                              rf"{key} '[a-z_]+' \(e.g. '{shared}'\)"):
            check_tuning_split(bad_info, "tune", GUARDED)
    only_seed = dict(info.splits, tune=["d", "a"])
    bad_info = type(info)(root=info.root, classes=info.classes, splits=only_seed, labels=info.labels)
    with pytest.raises(ConfigError, match="dataset.seed_split 'train'"):
        check_tuning_split(bad_info, "tune", {"dataset.seed_split": "train"})
    # The rules check it too: tune_threshold before its sweep, ir_labels before labelling.
    bad_json = tmp_path / "bad_dataset.json"
    type(info)(root=info.root, classes=info.classes, splits=dict(info.splits, tune=["d", "a"]),
               labels=info.labels).to_json(bad_json)
    with pytest.raises(ConfigError, match="dataset.tuning_split"):
        tune_threshold(tmp_path / "tune.h5", bad_json, "tune", GUARDED, GRID, "m",
                       tmp_path / "t.json", tmp_path / "t.csv")
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({"threshold": 0.2, "threshold_choice": "tuned on tune"}))
    with pytest.raises(ConfigError, match="dataset.tuning_split"):
        training_gamma(cfg, type(info).from_json(bad_json), tuned)
    with pytest.raises(ConfigError, match="dataset.tuning_split is null"):
        training_gamma(dict(cfg, dataset=dict(cfg["dataset"], tuning_split=None)), info, tuned)


def test_seed_evaluation_json_labels_the_oracle_and_the_preset(leak_case):
    from esol.evaluate import evaluate_seeds_to_files

    _, _, _, dataset_json, tmp_path = leak_case
    out = {k: tmp_path / f"seed.{k}" for k in ("json", "csv", "png")}
    summary = evaluate_seeds_to_files(tmp_path / "train_aug.h5", dataset_json, "train", GRID, "m",
                                      preset=(0.6, "tuned on tune"), **out)
    written = json.loads(out["json"].read_text())
    assert written["preset"]["threshold_choice"] == "tuned on tune" and written.keys() == summary.keys()
    assert summary["threshold_choice"].startswith("oracle") and summary["miou"] == 1.0
    # At the preset 0.6 no score (0.5 at most) is above it: background everywhere.
    assert summary["preset"]["threshold"] == 0.6 and summary["preset"]["recall"] == 0.0
    assert summary["preset"]["threshold_choice"] == "tuned on tune"
    assert summary["ground_truth"]["split"] == "train"
    assert summary["ground_truth"]["masks"] == "SegmentationClass"
    assert "ignored" in summary["ground_truth"]["ground_truth_255"]


def test_ground_truth_source_names_the_mask_folder(tmp_path):
    from esol.evaluate import ground_truth_source

    masks = {"a": _object(4, 4, 1, (0, 2, 0, 2)), "b": _object(4, 4, 1, (0, 2, 0, 2))}
    root = write_voc_fixture(tmp_path / "voc", masks, {"train": ["a", "b"]})
    info = prepare_dataset(root, ["x"], ["train"])
    assert ground_truth_source(info, "train") == "SegmentationClass"
    (root / "SegmentationClass" / "b.png").unlink()  # b has only the SBD-style mask now
    assert ground_truth_source(info, "train") == "1 SegmentationClass, 1 SegmentationClassAug"


def test_synthetic_tuning_split_leaves_the_other_splits_bit_identical(tmp_path, config):
    from esol.data.synthetic import generate

    params = dict(config["dataset"]["synthetic"], image_size=[40, 44], clutter=[1, 2],
                  counts={"train_aug": 3, "train": 2, "val": 2, "test": 1})
    generate(tmp_path / "old", params, seed=0)
    generate(tmp_path / "new", dict(params, counts=dict(params["counts"], tune=2)), seed=0)
    old = {p.relative_to(tmp_path / "old"): p.read_bytes()
           for p in (tmp_path / "old").rglob("*") if p.is_file()}
    new = {p.relative_to(tmp_path / "new"): p.read_bytes()
           for p in (tmp_path / "new").rglob("*") if p.is_file()}
    assert old and all(new[k] == v for k, v in old.items())
    added = sorted(str(k) for k in new.keys() - old.keys())
    assert added == ["ImageSets/Segmentation/tune.txt", "JPEGImages/u00000.jpg", "JPEGImages/u00001.jpg",
                     "SegmentationClass/u00000.png", "SegmentationClass/u00001.png",
                     "SegmentationClassAug/u00000.png", "SegmentationClassAug/u00001.png"]
    tune_ids = (tmp_path / "new" / "ImageSets/Segmentation/tune.txt").read_text().split()
    others = set()
    for split in ("train_aug", "train", "val", "test"):
        others |= set((tmp_path / "new" / f"ImageSets/Segmentation/{split}.txt").read_text().split())
    assert tune_ids == ["u00000", "u00001"] and not others & set(tune_ids)
    # Its images are new draws, not copies of another split's (a shared RNG stream).
    images = {k: v for k, v in new.items() if k.parts[0] == "JPEGImages"}
    for name in ("u00000.jpg", "u00001.jpg"):
        tune_bytes = images.pop(Path("JPEGImages") / name)
        assert tune_bytes not in images.values(), name


# Label maps the generator wrote before the tuning split existed (commit 265af03, the
# parameters above): sha256 of the mask array, first 16 hex digits. Drawing and RNG only,
# no codec, so they hold on any machine.
BEFORE_TUNE = {"s00000": "5651ac4c5af62c58", "s00001": "5261ee012b1989a8",
               "s00002": "d06b92f8d6c70523", "v00000": "37e02bd2ffd3c27e",
               "v00001": "0a06bdbfc8517914"}


def test_synthetic_masks_equal_those_generated_before_the_tuning_split(tmp_path, config):
    import hashlib

    from esol.data.synthetic import generate

    params = dict(config["dataset"]["synthetic"], image_size=[40, 44], clutter=[1, 2],
                  counts={"train_aug": 3, "train": 2, "val": 2, "test": 1, "tune": 2})
    generate(tmp_path, params, seed=0)
    for image_id, digest in BEFORE_TUNE.items():
        mask = read_label(tmp_path / "SegmentationClassAug" / f"{image_id}.png")
        assert hashlib.sha256(np.ascontiguousarray(mask).tobytes()).hexdigest()[:16] == digest, image_id
