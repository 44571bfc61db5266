"""Full-scale datasets as published: VOC 2012 + SBD, MS COCO 2014, and their configs.

Every fixture is written here in the published format, tiny: a VOCdevkit tree (JPEGs,
palette PNGs, split lists), SBD ``cls/*.mat`` files in SBD's ``GTcls`` struct layout,
COCO ``instances_*.json`` files with polygons, compressed RLE and crowd regions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from conftest import REPO, load_config
from esol.data import coco, voc, voc_aug
from esol.data.prepare import converted_root, prepare_from_config
from esol.utils import DatasetError

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
H, W = 6, 8


# ---------------------------------------------------------------- fixtures, as published

def _jpeg(path: Path, h: int = H, w: int = W, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, "JPEG")


def _voc_mask(cls: int, border: bool = True) -> np.ndarray:
    """A VOC ground truth: one object of class ``cls`` with a 255 border above it."""
    m = np.zeros((H, W), np.uint8)
    m[2:5, 2:6] = cls
    if border:
        m[1, 2:6] = 255
    return m


def _sbd_mask(cls: int, shift: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[1:4, shift:shift + 3] = cls
    return m


def write_sbd_mat(path: Path, seg: np.ndarray) -> None:
    """One SBD ``cls/<id>.mat``: struct GTcls with Segmentation, Boundaries, CategoriesPresent."""
    boundaries = np.empty((20, 1), dtype=object)
    for i in range(20):
        boundaries[i, 0] = scipy.sparse.csc_matrix(seg.shape, dtype=bool)
    present = np.unique(seg[(seg > 0) & (seg < 255)]).astype(np.uint8).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"GTcls": {"Segmentation": seg, "Boundaries": boundaries,
                                           "CategoriesPresent": present}})


VOC_TRAIN = ["2007_000001", "2007_000002"]
VOC_VAL = ["2007_000003", "2008_000004"]
SBD_TRAIN = ["2007_000002", "2007_000003", "2008_000005", "2008_000006"]
SBD_VAL = ["2008_000007"]
# (VOC train | SBD train | SBD val) - VOC val
TRAIN_AUG = ["2007_000001", "2007_000002", "2008_000005", "2008_000006", "2008_000007"]
SBD_MASKS = {"2007_000002": _sbd_mask(9, 0), "2007_000003": _sbd_mask(4, 1),
             "2008_000005": _sbd_mask(12, 2), "2008_000006": _sbd_mask(15, 3),
             "2008_000007": _sbd_mask(20, 4)}
VOC_MASKS = {"2007_000001": _voc_mask(1), "2007_000002": _voc_mask(7),
             "2007_000003": _voc_mask(3), "2008_000004": _voc_mask(5)}


def write_vocdevkit(base: Path) -> Path:
    """VOCdevkit/VOC2012 (JPEGImages for every id, SegmentationClass for train and val)."""
    root = base / "VOCdevkit" / "VOC2012"
    for i, image_id in enumerate(sorted(set(TRAIN_AUG) | set(VOC_VAL))):
        _jpeg(root / "JPEGImages" / f"{image_id}.jpg", seed=i)
    for image_id, m in VOC_MASKS.items():
        voc.write_label(root / "SegmentationClass" / f"{image_id}.png", m)
    voc.write_split(root, "train", VOC_TRAIN)
    voc.write_split(root, "val", VOC_VAL)
    voc.write_split(root, "trainval", VOC_TRAIN + VOC_VAL)
    return root


def write_sbd(base: Path) -> Path:
    """benchmark_RELEASE/dataset with cls/*.mat, img/*.jpg, train.txt, val.txt."""
    root = base / "benchmark_RELEASE"
    ds = root / "dataset"
    for image_id, seg in SBD_MASKS.items():
        write_sbd_mat(ds / "cls" / f"{image_id}.mat", seg)
        _jpeg(ds / "img" / f"{image_id}.jpg")
    (ds / "train.txt").write_text("".join(f"{i}\n" for i in SBD_TRAIN))
    (ds / "val.txt").write_text("".join(f"{i}\n" for i in SBD_VAL))
    return root


def _poly_rect(x0, y0, x1, y1) -> list[float]:
    """A rectangle polygon; pycocotools fills columns x0..x1-1 and rows y0..y1-1."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def coco_instances(split: str, n_images: int) -> tuple[dict, dict[str, np.ndarray]]:
    """An instances_<split>2014.json and the semantic masks it must render to.

    Categories 1, 3 and 90 (COCO's ids have gaps) become mask values 1, 2, 3. Image 0:
    a polygon person (cat 1), a compressed-RLE object (cat 90) overlapping it, a crowd
    region (cat 3, uncompressed RLE) partly under the person. Image 1: one polygon
    (cat 3). Image 2 (train only): no annotation at all.
    """
    cats = [{"id": 90, "name": "toothbrush", "supercategory": "indoor"},
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 3, "name": "car", "supercategory": "vehicle"}]
    images, anns, expected = [], [], {}
    for k in range(n_images):
        name = f"COCO_{split}2014_{k + 1:012d}"
        images.append({"id": 100 + k, "file_name": f"{name}.jpg", "height": H, "width": W})
        expected[name] = np.zeros((H, W), np.uint8)
    crowd = np.zeros((H, W), np.uint8, order="F")
    crowd[3:6, 0:4] = 1
    rle_obj = np.zeros((H, W), np.uint8, order="F")
    rle_obj[0:2, 4:7] = 1  # overlaps the person at row 1, column 4
    compressed = mask_utils.encode(np.asfortranarray(rle_obj))
    anns += [
        {"id": 1, "image_id": 100, "category_id": 1, "iscrowd": 0, "area": 12.0, "bbox": [1, 1, 4, 3],
         "segmentation": [_poly_rect(1, 1, 5, 4)]},  # rows 1-3, cols 1-4
        {"id": 2, "image_id": 100, "category_id": 90, "iscrowd": 0, "area": 6.0, "bbox": [4, 0, 3, 2],
         "segmentation": {"size": [H, W], "counts": compressed["counts"].decode()}},
        {"id": 3, "image_id": 100, "category_id": 3, "iscrowd": 1, "area": 12.0, "bbox": [0, 3, 4, 3],
         "segmentation": {"size": [H, W], "counts": _uncompressed_counts(crowd)}},
    ]
    e = expected[images[0]["file_name"][:-4]]
    e[3:6, 0:4] = 255        # crowd region
    e[1:4, 1:5] = 1          # the person covers the crowd where they overlap
    e[0:2, 4:7] = 3          # the smaller RLE object is painted over the person
    if n_images > 1:
        anns.append({"id": 4, "image_id": 101, "category_id": 3, "iscrowd": 0, "area": 4.0,
                     "bbox": [0, 0, 2, 2], "segmentation": [_poly_rect(0, 0, 2, 2)]})
        expected[images[1]["file_name"][:-4]][0:2, 0:2] = 2
    return {"info": {}, "licenses": [], "images": images, "annotations": anns,
            "categories": cats}, expected


def _uncompressed_counts(m: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths in column-major order, starting with zeros."""
    flat = np.asarray(m).flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return counts


def write_coco(base: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = base / "coco"
    expected = {}
    for split, n in (("train", 3), ("val", 2)):
        data, masks = coco_instances(split, n)
        expected.update(masks)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(data))
        for k, im in enumerate(data["images"]):
            _jpeg(root / f"{split}2014" / im["file_name"], seed=k)
    return root, expected


@pytest.fixture
def vocdevkit(tmp_path):
    return write_vocdevkit(tmp_path), write_sbd(tmp_path)


@pytest.fixture
def coco_tree(tmp_path):
    return write_coco(tmp_path)


def voc12_config(voc_root: Path, sbd_root: Path | None, work: Path) -> dict:
    cfg = load_config(REPO / "config" / "voc12.yaml")
    cfg["dataset"].update(root=str(voc_root), sbd_root=str(sbd_root) if sbd_root else None,
                          converted_root=str(work / "converted"),
                          expected_counts={"train": 2, "val": 2, "train_aug": 5})
    return cfg


def coco14_config(coco_root: Path, work: Path) -> dict:
    cfg = load_config(REPO / "config" / "coco14.yaml")
    cfg["dataset"]["coco"]["root"] = str(coco_root)
    cfg["dataset"].update(converted_root=str(work / "converted"),
                          expected_counts={"train": 3, "val": 2})
    return cfg


# ---------------------------------------------------------------- VOC 2012 + SBD

def test_train_aug_list_arithmetic():
    assert voc_aug.train_aug_ids(VOC_TRAIN, VOC_VAL, SBD_TRAIN, SBD_VAL) == TRAIN_AUG
    # The published sizes: 1464 + 8498 + 2857 ids; duplicates and VOC val removed.
    assert voc_aug.train_aug_ids(["a", "b"], ["c"], ["b", "c", "d"], ["d", "e"]) == ["a", "b", "d", "e"]


def test_sbd_mask_is_read_from_the_gtcls_struct(tmp_path):
    seg = _sbd_mask(15, 2)
    write_sbd_mat(tmp_path / "x.mat", seg)
    np.testing.assert_array_equal(voc_aug.read_sbd_mask(tmp_path / "x.mat"), seg)
    scipy.io.savemat(str(tmp_path / "inst.mat"), {"GTinst": {"Segmentation": seg}})
    with pytest.raises(DatasetError, match=r"inst\.mat has no GTcls\.Segmentation"):
        voc_aug.read_sbd_mask(tmp_path / "inst.mat")


def test_convert_sbd_masks_pixel_by_pixel_and_voc_wins(vocdevkit, tmp_path):
    voc_root, sbd_root = vocdevkit
    out = tmp_path / "converted"
    summary = voc_aug.convert_sbd(voc_root, sbd_root, out, workers=2)
    assert summary["train_aug"] == 5 and summary["masks_from_sbd"] == 3
    assert summary["masks_from_voc"] == 2 and summary["converted"] == 3
    assert (out / "ImageSets/Segmentation/train_aug.txt").read_text().split() == TRAIN_AUG
    written = sorted(p.stem for p in (out / "SegmentationClassAug").glob("*.png"))
    assert written == ["2008_000005", "2008_000006", "2008_000007"]  # 2007_000002: VOC's mask wins
    for image_id in written:
        with Image.open(out / "SegmentationClassAug" / f"{image_id}.png") as im:
            assert im.mode == "P" and im.getpalette()[3:6] == [128, 0, 0]
            np.testing.assert_array_equal(np.asarray(im), SBD_MASKS[image_id])
    assert not any(p.name != "VOC2012" for p in voc_root.parent.iterdir())  # nothing written there
    assert not (voc_root / "SegmentationClassAug").exists()


def test_convert_sbd_resumes_and_redoes_stale_masks(vocdevkit, tmp_path):
    voc_root, sbd_root = vocdevkit
    out = tmp_path / "converted"
    voc_aug.convert_sbd(voc_root, sbd_root, out)
    again = voc_aug.convert_sbd(voc_root, sbd_root, out)
    assert again["converted"] == 0 and again["up_to_date"] == 3
    mat = sbd_root / "dataset" / "cls" / "2008_000006.mat"
    write_sbd_mat(mat, _sbd_mask(2, 0))
    png = out / "SegmentationClassAug" / "2008_000006.png"
    os.utime(mat, ns=(png.stat().st_mtime_ns + 10**9,) * 2)
    third = voc_aug.convert_sbd(voc_root, sbd_root, out)
    assert third["converted"] == 1
    np.testing.assert_array_equal(voc.read_label(png), _sbd_mask(2, 0))


def test_prepare_voc_with_sbd_derives_labels(vocdevkit, tmp_path, monkeypatch):
    voc_root, sbd_root = vocdevkit
    monkeypatch.chdir(tmp_path)
    cfg = voc12_config(voc_root, sbd_root, tmp_path)
    voc_aug.convert_sbd(voc_root, sbd_root, converted_root(cfg))
    info = prepare_from_config(cfg)
    assert info.splits["train_aug"] == TRAIN_AUG and info.splits["train"] == VOC_TRAIN
    # VOC's own annotation (class 7) for 2007_000002, not SBD's (class 9); SBD for the rest.
    assert info.labels["train_aug"] == {"2007_000001": [1], "2007_000002": [7], "2008_000005": [12],
                                        "2008_000006": [15], "2008_000007": [20]}
    assert info.labels["val"] == {"2007_000003": [3], "2008_000004": [5]}
    # The prepared dataset finds the converted masks after a JSON round trip.
    info.to_json(tmp_path / "d.json")
    again = voc.DatasetInfo.from_json(tmp_path / "d.json")
    assert again.layout.label_source("2008_000006") == (tmp_path / "converted" / "SegmentationClassAug"
                                                        / "2008_000006.png").resolve()
    assert again.layout.gt_mask("2007_000003") == voc_root.resolve() / "SegmentationClass" / "2007_000003.png"


def test_train_aug_from_a_segmentationclassaug_folder_without_list(vocdevkit, tmp_path, monkeypatch):
    voc_root, _ = vocdevkit
    monkeypatch.chdir(tmp_path)
    for image_id in TRAIN_AUG + VOC_VAL:  # DeepLab's folder: train_aug and val masks
        m = SBD_MASKS.get(image_id, VOC_MASKS.get(image_id))
        voc.write_label(voc_root / "SegmentationClassAug" / f"{image_id}.png", np.where(m == 255, 0, m))
    info = prepare_from_config(voc12_config(voc_root, None, tmp_path))
    assert info.splits["train_aug"] == TRAIN_AUG
    assert info.labels["train_aug"]["2007_000002"] == [9]  # this folder's own mask is used


def test_train_aug_without_any_source_says_what_to_do(vocdevkit, tmp_path, monkeypatch):
    voc_root, _ = vocdevkit
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match=r"no train_aug list: .*train_aug\.txt does not exist and .* "
                                           r"has no SegmentationClassAug/ folder\. Set dataset\.sbd_root"):
        prepare_from_config(voc12_config(voc_root, None, tmp_path))


def test_missing_sbd_folder_is_named(vocdevkit, tmp_path):
    voc_root, sbd_root = vocdevkit
    with pytest.raises(DatasetError, match=r"SBD folder not found: neither .*nowhere/cls nor "
                                           r".*nowhere/dataset/cls exists \(config key dataset\.sbd_root"):
        voc_aug.convert_sbd(voc_root, tmp_path / "nowhere", tmp_path / "out")
    (sbd_root / "dataset" / "cls" / "2008_000006.mat").unlink()
    with pytest.raises(DatasetError, match=r"cls: 1 of 3 SBD masks \(<id>\.mat\) of train_aug ids missing "
                                           r"\(2008_000006\.mat\)"):
        voc_aug.convert_sbd(voc_root, sbd_root, tmp_path / "out")


def test_incomplete_voc_is_reported_by_folder(vocdevkit, tmp_path, monkeypatch):
    voc_root, sbd_root = vocdevkit
    monkeypatch.chdir(tmp_path)
    cfg = voc12_config(voc_root, sbd_root, tmp_path)
    voc_aug.convert_sbd(voc_root, sbd_root, converted_root(cfg))
    cfg["dataset"]["expected_counts"] = {"train": 1464, "val": 2, "train_aug": 5, "test": 1456}
    (voc_root / "JPEGImages" / "2008_000006.jpg").unlink()
    (voc_root / "SegmentationClass" / "2008_000004.png").unlink()
    with pytest.raises(DatasetError) as err:
        prepare_from_config(cfg)
    lines = str(err.value).splitlines()
    assert lines[0].endswith("VOC2012 is incomplete:")
    assert lines[1].strip().endswith("train.txt: 2 ids, expected 1464 (dataset.expected_counts.train)")
    assert any(line.strip().endswith("JPEGImages: 1 of 5 train_aug images missing (2008_000006.jpg)")
               for line in lines)
    assert any("SegmentationClass" in line and "1 of 2 val masks missing (2008_000004.png)" in line
               for line in lines)
    assert "expected_counts.test" not in str(err.value)  # test is not configured: not checked


def test_missing_image_folder_is_named(vocdevkit, tmp_path, monkeypatch):
    voc_root, sbd_root = vocdevkit
    monkeypatch.chdir(tmp_path)
    cfg = voc12_config(voc_root, sbd_root, tmp_path)
    voc_aug.convert_sbd(voc_root, sbd_root, converted_root(cfg))
    for p in (voc_root / "JPEGImages").iterdir():
        p.unlink()
    (voc_root / "JPEGImages").rmdir()
    with pytest.raises(DatasetError, match=r"JPEGImages/: folder not found"):
        prepare_from_config(cfg)


# ---------------------------------------------------------------- MS COCO 2014

def test_category_map_sorts_ids_and_keeps_names():
    ids, names = coco.category_map([{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"},
                                    {"id": 3, "name": "car"}])
    assert ids == [1, 3, 90] and names == ["person", "car", "toothbrush"]


def test_convert_coco_masks_pixel_by_pixel(coco_tree, tmp_path):
    coco_root, expected = coco_tree
    out = tmp_path / "converted"
    splits = coco.coco_splits_from_config(coco14_config(coco_root, tmp_path)["dataset"])
    manifest = coco.convert_coco(splits, out, workers=2)
    assert manifest["classes"] == ["person", "car", "toothbrush"]
    assert manifest["category_ids"] == [1, 3, 90]
    assert manifest["splits"]["train"]["images"] == 3 and manifest["splits"]["val"]["images"] == 2
    assert manifest["splits"]["train"]["images_with_a_class_only_in_crowds"] == 1
    for image_id, mask in expected.items():
        got = voc.read_label(out / "SegmentationClass" / f"{image_id}.png")
        np.testing.assert_array_equal(got, mask, err_msg=image_id)
        link = out / "JPEGImages" / f"{image_id}.jpg"
        split = "train" if "train" in image_id else "val"
        assert link.is_symlink() and link.resolve() == (coco_root / f"{split}2014" / f"{image_id}.jpg").resolve()
    assert (out / "ImageSets/Segmentation/train.txt").read_text().split() == \
        [f"COCO_train2014_{k:012d}" for k in (1, 2, 3)]


def test_convert_coco_resumes(coco_tree, tmp_path):
    coco_root, expected = coco_tree
    out = tmp_path / "converted"
    splits = coco.coco_splits_from_config(coco14_config(coco_root, tmp_path)["dataset"])
    coco.convert_coco(splits, out)
    (out / "SegmentationClass" / "COCO_val2014_000000000002.png").unlink()  # an interrupted run
    again = coco.convert_coco(splits, out)
    assert again["splits"]["train"]["written"] == 0 and again["splits"]["val"]["written"] == 1
    np.testing.assert_array_equal(voc.read_label(out / "SegmentationClass" / "COCO_val2014_000000000002.png"),
                                  expected["COCO_val2014_000000000002"])


def test_prepare_coco_labels_and_classes(coco_tree, tmp_path, monkeypatch):
    coco_root, _ = coco_tree
    monkeypatch.chdir(tmp_path)
    cfg = coco14_config(coco_root, tmp_path)
    manifest = coco.convert_coco(coco.coco_splits_from_config(cfg["dataset"]), converted_root(cfg))
    (converted_root(cfg) / "coco.json").write_text(json.dumps(manifest))
    info = prepare_from_config(cfg)
    assert info.classes == ["person", "car", "toothbrush"]
    # The crowd-only car (255) is not an image label; image 3 has no annotation at all.
    assert info.labels["train"] == {"COCO_train2014_000000000001": [1, 3],
                                    "COCO_train2014_000000000002": [2],
                                    "COCO_train2014_000000000003": []}
    assert info.labelled_ids("train") == ["COCO_train2014_000000000001", "COCO_train2014_000000000002"]


def test_coco_missing_folder_and_file_are_named(coco_tree, tmp_path):
    coco_root, _ = coco_tree
    splits = coco.coco_splits_from_config(coco14_config(coco_root, tmp_path)["dataset"])
    bad = dict(splits, val=(splits["val"][0], coco_root / "val2017"))
    with pytest.raises(DatasetError, match=r"COCO val images folder not found: .*val2017 "
                                           r"\(config key dataset\.coco\.splits\.val\.images\)"):
        coco.convert_coco(bad, tmp_path / "out")
    bad = dict(splits, train=(coco_root / "annotations" / "instances_train2017.json", splits["train"][1]))
    with pytest.raises(DatasetError, match=r"COCO train annotations not found: .*instances_train2017\.json"):
        coco.convert_coco(bad, tmp_path / "out")
    (coco_root / "train2014" / "COCO_train2014_000000000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"train2014: 1 of 3 images listed in instances_train2014\.json "
                                           r"missing \(COCO_train2014_000000000002\.jpg\)"):
        coco.convert_coco(splits, tmp_path / "out")


def test_coco_unknown_category_names_the_annotation(coco_tree, tmp_path):
    coco_root, _ = coco_tree
    path = coco_root / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 12
    path.write_text(json.dumps(data))
    splits = coco.coco_splits_from_config(coco14_config(coco_root, tmp_path)["dataset"])
    with pytest.raises(DatasetError, match=r"instances_val2014\.json: annotation 1 has category_id 12"):
        coco.convert_coco(splits, tmp_path / "out")


# ---------------------------------------------------------------- the configs, through Snakemake

def _snakemake(work: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess:
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    return subprocess.run([SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(work), "--configfile",
                           str(work / "config.yaml"), *args], capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["voc12", "coco14"])
def test_full_scale_config_plans_the_whole_dag(name, vocdevkit, coco_tree, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    if name == "voc12":
        cfg, convert = voc12_config(*vocdevkit, work), "convert_sbd"
    else:
        cfg, convert = coco14_config(coco_tree[0], work), "convert_coco"
    run = _snakemake(work, cfg, "-n")
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout + run.stderr
    for rule in (convert, "prepare_data", "train_classifier", "train_expansion", "train_shrinkage",
                 "make_cam", "eval_seed", "compare_seeds"):
        assert rule in out, (rule, out[-2000:])
    # Then the conversion and preparation for real, through the rules' scripts.
    run = _snakemake(work, cfg, "--cores", "2", f"results/{name}/data/dataset.json")
    assert run.returncode == 0, run.stderr[-3000:]
    info = voc.DatasetInfo.from_json(work / "results" / name / "data" / "dataset.json")
    if name == "voc12":
        assert info.splits["train_aug"] == TRAIN_AUG and info.labels["train_aug"]["2008_000007"] == [20]
    else:
        assert info.classes == ["person", "car", "toothbrush"] and len(info.splits["val"]) == 2
    assert not (work / "results" / name / "synthetic").exists()

