"""Saliency-combined pseudo masks (esol/saliency.py; the paper's Table 4 rows "with S") and
their place in the DAG (workflow/rules/saliency.smk)."""

import copy

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import load_config
from esol.data.voc import prepare_dataset, read_label, write_label
from esol.run_report import source_label
from esol.saliency import IGNORE, classical_saliency, combine, make_saliency_masks
from esol.utils import DatasetError
from test_external_cams import planned_jobs

try:
    import cv2

    HAS_CONTRIB = hasattr(cv2, "saliency")
except ImportError:
    HAS_CONTRIB = False


def test_combination_on_a_4x4_example_by_hand():
    # Mask: background, class 1, class 2, and a 255 of the mask's own.
    mask = np.array([[0, 0, 1, 1],
                     [0, 0, 1, 1],
                     [2, 2, 0, 255],
                     [2, 2, 0, 255]], np.uint8)
    # Saliency 0-255; tau 0.2 -> salient above 51 (51/255 = 0.2 exactly is not salient).
    sal = np.array([[0, 200, 51, 255],
                    [52, 10, 52, 0],
                    [255, 51, 255, 255],
                    [0, 100, 30, 0]], np.uint8)
    want = np.array([[0, IGNORE, 0, 1],         # bg+not salient, bg+salient, 1 at tau, 1 salient
                     [IGNORE, 0, 1, 0],         # bg salient -> ignore; class not salient -> bg
                     [2, 0, IGNORE, 255],       # bg salient -> ignore; mask's 255 salient stays
                     [0, 2, 0, 0]], np.uint8)   # non-salient: background whatever the mask says
    np.testing.assert_array_equal(combine(mask, sal, 0.2), want)


def test_threshold_zero_keeps_only_the_zero_saliency_pixels_background():
    mask = np.array([[0, 1], [0, 1]], np.uint8)
    sal = np.array([[0, 0], [1, 1]], np.uint8)
    np.testing.assert_array_equal(combine(mask, sal, 0.0), [[0, 0], [IGNORE, 1]])


@pytest.fixture
def masks_and_maps(tiny_voc, tmp_path):
    info = prepare_dataset(tiny_voc, ["one", "two", "three"], ["train_aug", "train", "val"])
    info.to_json(tmp_path / "dataset.json")
    masks, maps = tmp_path / "masks", tmp_path / "sal"
    maps.mkdir()
    for i in info.ids("train_aug"):
        gt = read_label(info.layout.mask(i))
        write_label(masks / f"{i}.png", np.where(gt == 255, 0, gt))
        Image.fromarray(np.full(gt.shape, 200, np.uint8)).save(maps / f"{i}.png")
    return info, tmp_path / "dataset.json", masks, maps


def test_masks_folder_is_the_combination_of_each_image(masks_and_maps, tmp_path):
    info, dataset_json, masks, maps = masks_and_maps
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(maps / "a.png")  # a: nothing salient
    shares = make_saliency_masks(dataset_json, "train_aug", masks, maps, 0.2, tmp_path / "out")
    a = read_label(tmp_path / "out" / "a.png")
    b = read_label(tmp_path / "out" / "b.png")
    assert (a == 0).all()
    gt_b = read_label(masks / "b.png")
    np.testing.assert_array_equal(b, np.where(gt_b == 0, IGNORE, gt_b))
    assert not (tmp_path / "out.partial").exists()
    assert 0 < shares["ignore"] < 1 and 0 < shares["background"] < 1


def test_a_missing_map_names_the_first_missing_file(masks_and_maps, tmp_path):
    _, dataset_json, masks, maps = masks_and_maps
    (maps / "b.png").unlink()
    (maps / "c.png").unlink()
    with pytest.raises(DatasetError, match=r"2 of 3 images have no map in .*sal, first .*/sal/b\.png$"):
        make_saliency_masks(dataset_json, "train_aug", masks, maps, 0.2, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_map_of_another_size_is_named(masks_and_maps, tmp_path):
    _, dataset_json, masks, maps = masks_and_maps
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(maps / "c.png")
    with pytest.raises(DatasetError, match=r"saliency map .*c\.png is \(6, 8\) but the pseudo mask"):
        make_saliency_masks(dataset_json, "train_aug", masks, maps, 0.2, tmp_path / "out")


@pytest.mark.skipif(not HAS_CONTRIB, reason="cv2.saliency needs opencv-contrib-python-headless")
def test_classical_detector_finds_a_bright_square_on_a_flat_background():
    img = np.full((64, 80, 3), 40, np.uint8)
    img[20:40, 30:50] = (230, 60, 60)
    sal = classical_saliency(img)
    assert sal.shape == (64, 80) and sal.dtype == np.uint8 and sal.max() == 255
    inside = sal[20:40, 30:50].mean()
    far = sal[:8, :8].mean()
    assert inside > far


def test_report_names_the_saliency_rows():
    assert source_label("esol-sal") == "`esol` pseudo masks + saliency (S)"
    assert source_label("esol") == "`esol` pseudo masks"


def _config(tmp_path, **saliency):
    cfg = copy.deepcopy(load_config())
    cfg["segmentation"].update(supervised=False, methods=["esol"], saliency=True)
    cfg["saliency"].update(saliency)
    path = tmp_path / "sal.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return cfg, path


def test_dry_run_plans_the_saliency_rules_and_the_s_row(tmp_path):
    cfg, path = _config(tmp_path, source="classical")
    name = cfg["dataset"]["name"]
    jobs = planned_jobs(f"results/{name}/report/report.md", path, tmp_path / "work")
    assert jobs.get("saliency_maps") == 1 and jobs.get("saliency_masks") == 1, jobs
    # esol and esol-sal: two DeepLabs, each predicted and evaluated.
    assert jobs.get("train_segmentation") == 2 and jobs.get("eval_segmentation") == 2, jobs
    s_row = planned_jobs(f"results/{name}/models/deeplab_esol-sal.pt", path, tmp_path / "work")
    assert {"saliency_maps", "saliency_masks", "pseudo_masks"} <= set(s_row), s_row
    assert not [r for r in s_row if r.startswith("eval_")], s_row


def test_dry_run_with_a_user_folder_plans_no_detector(tmp_path):
    (tmp_path / "maps").mkdir()
    cfg, path = _config(tmp_path, source=str(tmp_path / "maps"))
    name = cfg["dataset"]["name"]
    jobs = planned_jobs(f"results/{name}/models/deeplab_esol-sal.pt", path, tmp_path / "work")
    assert "saliency_masks" in jobs and "saliency_maps" not in jobs, jobs


def test_saliency_rows_without_a_source_are_a_config_error(tmp_path):
    import subprocess

    from conftest import REPO
    from test_workflow import SNAKEMAKE
    _, path = _config(tmp_path, source="none")
    run = subprocess.run([SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "-d",
                          str(tmp_path / "work"), "-n", "--configfile", str(path)],
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert "config key segmentation.saliency is true but saliency.source is none" in \
        run.stdout + run.stderr
