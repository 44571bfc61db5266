"""Shared fixtures: the validated default config and small datasets written by tests."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from esol.data import voc

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def load_config(path: Path = REPO / "config" / "config.yaml") -> dict:
    from snakemake.utils import validate

    cfg = yaml.safe_load(path.read_text())
    validate(cfg, str(SCHEMA))
    return cfg


def module_scratch(request: pytest.FixtureRequest, factory: pytest.TempPathFactory,
                   name: str) -> Iterator[Path]:
    """A folder for a module-scoped fixture, removed when its module passed.

    The end-to-end fixtures write hundreds of MB of checkpoints; pytest keeps them to the
    session's end, and CI machines have run out of disk on that. A module with a
    failure keeps its folder for inspection.
    """
    failed_before = request.session.testsfailed
    path = factory.mktemp(name)
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def config() -> dict:
    return copy.deepcopy(load_config())


def write_voc_fixture(root: Path, masks: dict[str, np.ndarray], splits: dict[str, list[str]],
                      aug: bool = True) -> Path:
    """A VOC-layout folder: a JPEG per mask (noise), palette PNG masks, split lists."""
    rng = np.random.default_rng(0)
    for d in (voc.IMAGE_DIR, voc.MASK_DIR, voc.AUG_MASK_DIR):
        (root / d).mkdir(parents=True, exist_ok=True)
    for image_id, mask in masks.items():
        h, w = mask.shape
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / voc.IMAGE_DIR / f"{image_id}.jpg")
        voc.write_label(root / voc.MASK_DIR / f"{image_id}.png", mask)
        if aug:
            clean = np.where(mask == 255, 0, mask).astype(np.uint8)
            voc.write_label(root / voc.AUG_MASK_DIR / f"{image_id}.png", clean)
    for split, ids in splits.items():
        voc.write_split(root, split, ids)
    return root


@pytest.fixture
def tiny_voc(tmp_path: Path) -> Path:
    """Three 12x16 images, classes 1..3 of 3, borders of 255, one image without objects."""
    a = np.zeros((12, 16), np.uint8)
    a[2:6, 3:9] = 1
    a[1, 3:9] = 255
    b = np.zeros((12, 16), np.uint8)
    b[5:10, 1:5] = 2
    b[5:10, 10:15] = 3
    c = np.zeros((12, 16), np.uint8)
    return write_voc_fixture(tmp_path / "voc", {"a": a, "b": b, "c": c},
                             {"train_aug": ["a", "b", "c"], "train": ["a", "b"], "val": ["c"]})
