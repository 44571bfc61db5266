"""The VOC-layout loader and the synthetic generator."""

import hashlib
import logging

import numpy as np
import pytest
from PIL import Image

from esol.data import synthetic, voc
from esol.data.datasets import ClassificationDataset
from esol.utils import DatasetError

CLASSES = ["one", "two", "three"]


def test_voc_palette_matches_pascal():
    p = voc.voc_palette()
    assert p[0].tolist() == [0, 0, 0] and p[1].tolist() == [128, 0, 0]
    assert p[15].tolist() == [192, 128, 128] and p[255].tolist() == [224, 224, 192]


def test_prepare_derives_labels_from_masks(tiny_voc, caplog):
    with caplog.at_level(logging.WARNING):
        info = voc.prepare_dataset(tiny_voc, CLASSES, ["train_aug", "train", "val"])
    assert info.labels["train_aug"] == {"a": [1], "b": [2, 3], "c": []}
    assert info.splits["train"] == ["a", "b"]
    assert "1 of 3 images hold no object class" in caplog.text
    np.testing.assert_array_equal(info.label_vector("train_aug", "b"), [0, 1, 1])
    # Palette PNGs read back as indices, borders 255 included.
    assert voc.read_label(tiny_voc / "SegmentationClass" / "a.png")[1, 3] == 255


def test_prepared_json_round_trip(tiny_voc, tmp_path):
    info = voc.prepare_dataset(tiny_voc, CLASSES, ["train_aug"])
    info.to_json(tmp_path / "d.json")
    again = voc.DatasetInfo.from_json(tmp_path / "d.json")
    assert again.labels == info.labels and again.root == info.root


def test_training_set_skips_images_without_objects(tiny_voc, caplog):
    info = voc.prepare_dataset(tiny_voc, CLASSES, ["train_aug"])
    with caplog.at_level(logging.WARNING):
        ds = ClassificationDataset(info, "train_aug", resize_long=(10, 20), crop=16, seed=0)
    assert ds.ids == ["a", "b"] and "skipping 1 images" in caplog.text
    item = ds[1]
    assert item["img"].shape == (3, 16, 16) and item["label"].tolist() == [0, 1, 1]
    # The same (seed, epoch, index) gives the same augmentation; another epoch differs.
    assert (ds[1]["img"] == item["img"]).all()
    ds.set_epoch(1)
    assert not (ds[1]["img"] == item["img"]).all()


def test_missing_image_names_the_file(tiny_voc):
    (tiny_voc / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(DatasetError, match=r"train_aug: id 'b' is listed but its image .*b\.jpg is missing"):
        voc.prepare_dataset(tiny_voc, CLASSES, ["train_aug"])


def test_missing_mask_names_the_id(tiny_voc):
    (tiny_voc / "SegmentationClass" / "a.png").unlink()
    (tiny_voc / "SegmentationClassAug" / "a.png").unlink()
    with pytest.raises(DatasetError, match=r"id 'a' is listed but has no mask"):
        voc.prepare_dataset(tiny_voc, CLASSES, ["train_aug"])


def test_unreadable_image_names_the_file(tiny_voc):
    (tiny_voc / "JPEGImages" / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetError, match=r"unreadable image .*a\.jpg"):
        voc.prepare_dataset(tiny_voc, CLASSES, ["train_aug"])


def test_label_out_of_range_names_file_and_value(tiny_voc):
    bad = np.zeros((12, 16), np.uint8)
    bad[0, 0] = 7
    voc.write_label(tiny_voc / "SegmentationClassAug" / "b.png", bad)
    with pytest.raises(DatasetError, match=r"mask .*SegmentationClassAug/b\.png holds value 7, outside "
                                           r"the class range 0\.\.3"):
        voc.prepare_dataset(tiny_voc, CLASSES, ["train_aug"])


def test_mask_size_mismatch_is_reported(tiny_voc):
    voc.write_label(tiny_voc / "SegmentationClass" / "a.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DatasetError, match=r"mask .*a\.png is 5x5 but its image .*a\.jpg is 16x12"):
        voc.prepare_dataset(tiny_voc, CLASSES, ["train_aug"])


def test_rgb_mask_is_refused(tiny_voc):
    Image.new("RGB", (16, 12)).save(tiny_voc / "SegmentationClassAug" / "a.png")
    with pytest.raises(DatasetError, match=r"has mode RGB"):
        voc.prepare_dataset(tiny_voc, CLASSES, ["train_aug"])


def test_missing_split_and_root(tiny_voc, tmp_path):
    with pytest.raises(DatasetError, match=r"split list not found: .*ImageSets/Segmentation/test\.txt"):
        voc.prepare_dataset(tiny_voc, CLASSES, ["test"])
    with pytest.raises(DatasetError, match=r"dataset root not found: .*nowhere.*dataset\.root"):
        voc.prepare_dataset(tmp_path / "nowhere", CLASSES, ["train"])


def test_test_split_needs_images_only(tiny_voc):
    voc.write_split(tiny_voc, "test", ["c"])
    (tiny_voc / "SegmentationClass" / "c.png").unlink()
    (tiny_voc / "SegmentationClassAug" / "c.png").unlink()
    info = voc.prepare_dataset(tiny_voc, CLASSES, ["train"], unlabelled_splits=["test"])
    assert info.splits["test"] == ["c"] and "test" not in info.labels


SYN = dict(num_classes=3, image_size=[60, 70], counts=dict(train_aug=6, train=3, val=2, test=1),
           objects=[1, 3], body_radius=[0.15, 0.25], head_radius=[0.06, 0.08], body_signal=0.15,
           clutter=[2, 5], distractor_prob=0.4, border=1, jpeg_quality=90)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_synthetic_is_deterministic_for_a_seed(tmp_path):
    synthetic.generate(tmp_path / "a", SYN, seed=3)
    synthetic.generate(tmp_path / "b", SYN, seed=3)
    synthetic.generate(tmp_path / "c", SYN, seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_synthetic_layout_labels_and_borders(tmp_path):
    names = synthetic.generate(tmp_path, SYN, seed=0)
    assert names == synthetic.class_names(3) and len(set(names)) == 3
    info = voc.prepare_dataset(tmp_path, names, ["train_aug", "train", "val"], ["test"])
    assert info.splits["train"] == info.splits["train_aug"][:3]
    assert not (tmp_path / "SegmentationClass" / "t00000.png").exists()
    for image_id, labels in info.labels["train_aug"].items():
        aug = voc.read_label(tmp_path / "SegmentationClassAug" / f"{image_id}.png")
        gt = voc.read_label(tmp_path / "SegmentationClass" / f"{image_id}.png")
        assert labels == sorted(set(np.unique(aug).tolist()) - {0})
        assert 1 <= len(labels) <= 3 and 255 not in aug
        # Borders: 255 only where the clean label changes nearby; elsewhere identical.
        assert (gt == 255).any() and ((gt == aug) | (gt == 255)).all()


def test_synthetic_refuses_inconsistent_counts(tmp_path):
    from esol.utils import ConfigError

    bad = dict(SYN, counts=dict(train_aug=2, train=5, val=1))
    with pytest.raises(ConfigError, match="counts.train must not exceed counts.train_aug"):
        synthetic.generate(tmp_path, bad, seed=0)


def test_add_borders_by_hand():
    label = np.zeros((5, 5), np.uint8)
    label[1:4, 1:4] = 2
    out = synthetic.add_borders(label, 1)
    # Pixels with a different label within the 3x3 neighbourhood become 255: the ring
    # of the square and the ring around it; only the centre keeps its class.
    assert out[2, 2] == 2 and (out[out != 2] == 255).sum() == 24


def test_synthetic_objects_stand_out_from_the_background(tmp_path):
    # The CRF and IRN refine seeds along colour edges (docs/method.md, "Refinement on
    # the embedded data"): objects must be darker than the pale background in every
    # image, by a wide margin on average. The first design failed this.
    synthetic.generate(tmp_path, SYN, seed=0)
    gaps = []
    for mask in sorted((tmp_path / "SegmentationClassAug").glob("*.png")):
        label = voc.read_label(mask)
        value = voc.read_image(tmp_path / "JPEGImages" / f"{mask.stem}.jpg").max(axis=2)
        gaps.append(float(np.median(value[label == 0])) - float(np.median(value[label > 0])))
    assert len(gaps) == 8 and min(gaps) > 0, gaps
    assert np.mean(gaps) > 40, gaps
