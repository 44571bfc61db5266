"""The GPU benchmark's stage functions run the library's current code (on the CPU here).

`benchmarks/gpu_measure.py` is run by hand on a GPU; these tests keep it from drifting
away from the modules it times (its earlier IRN and DeepLab parts were stand-ins).
"""

from __future__ import annotations

import copy
import math
import sys

import pytest
import torch
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_measure  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture
def tiny_voc_config() -> dict:
    """config/voc12.yaml shrunk to a ResNet-18 at crops a CPU steps through in seconds."""
    cfg = copy.deepcopy(yaml.safe_load((REPO / "config" / "voc12.yaml").read_text()))
    cfg["model"]["backbone"].update(depth=18)
    cfg["classifier"].update(batch_size=2, crop=64)
    cfg["cam"]["scales"] = [1.0]
    cfg["irn"]["train"].update(batch_size=2, crop=64)
    cfg["segmentation"]["model"].update(depth=18)
    cfg["segmentation"]["train"].update(batch_size=2, crop=65)
    cfg["segmentation"]["predict"]["scales"] = [1.0]
    return cfg


def _rates_ok(rates: dict[str, float], names: set[str]) -> None:
    assert set(rates) == names
    assert all(math.isfinite(v) and v > 0 for v in rates.values())


@pytest.mark.slow
def test_each_stage_of_the_gpu_benchmark_runs(tiny_voc_config):
    size = (48, 64)
    _rates_ok(gpu_measure.esol_stages(tiny_voc_config, size, 3, None, 0, 1, 1, dev=CPU),
              {"classifier", "expansion", "shrinkage", "make_cam_cam", "make_cam_esol",
               "expansion/torchvision", "shrinkage/torchvision", "make_cam_esol/torchvision"})
    _rates_ok(gpu_measure.irn_stage(tiny_voc_config, size, 2, None, 0, 1, 1, dev=CPU),
              {"irn_train", "irn_random_walk"})
    _rates_ok(gpu_measure.deeplab_stage(tiny_voc_config, size, 3, None, 0, 1, 1, dev=CPU),
              {"deeplab_train", "deeplab_predict"})
