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


# -- benchmarks/scaleout.py: the projection's arithmetic on a hand fixture -------------

import scaleout  # noqa: E402


def _hand_case():
    """Per-job hours on one GPU = images / rate / 3600: classifier 1, expansion 2 (x2
    jobs), shrinkage 1, baseline CAMs 1, ESOL CAMs 0.5, IRN CAMs 2 (x2), IRN 1 (x2), walk
    0.25 (x2), DeepLab 2, prediction 1."""
    jobs = {"classifier": (1, 3600), "expansion": (2, 7200), "shrinkage": (1, 3600),
            "make_cam_cam": (1, 3600), "make_cam_esol": (1, 3600),
            "irn_cam_train_split": (2, 7200), "irn_train": (2, 3600),
            "irn_random_walk": (2, 3600), "deeplab_train": (1, 7200), "deeplab_predict": (1, 3600)}
    rates = {s: 1.0 for s in jobs} | {"make_cam_esol": 2.0, "irn_random_walk": 4.0}
    return rates, jobs


def test_scaleout_on_one_gpu_is_the_sum_of_the_stages():
    rates, jobs = _hand_case()
    r = scaleout.project(rates, jobs, gpus=1, shards=8, gpus_per_node=2, efficiency=0.5)
    assert r["work_gpu_hours"] == pytest.approx(17.0)
    # classifier 1 + expansion 2 + shrinkage 1 + IRN CAMs 2 + IRN 1 + walk 0.25 + DeepLab 2 + predict 1
    assert r["critical_path_hours"] == pytest.approx(10.25)
    assert r["critical_path"] == ["classifier", "expansion", "shrinkage", "irn_cam_train_split",
                                  "irn_train", "irn_random_walk", "deeplab_train", "deeplab_predict"]
    assert r["projected_hours"] == pytest.approx(17.0) == r["greedy_bound_hours"]


def test_scaleout_divides_per_image_stages_by_shard_waves_and_training_by_ddp():
    rates, jobs = _hand_case()
    # 4 GPUs, 8 shards: 2 waves of 1/8 each, a quarter of the time. Training on 2 GPUs of
    # a node at 50% efficiency: no faster, twice the GPU hours.
    r = scaleout.project(rates, jobs, gpus=4, shards=8, gpus_per_node=2, efficiency=0.5)
    st = r["stages"]
    assert st["irn_cam_train_split"]["job_hours"] == pytest.approx(0.5)
    assert st["expansion"]["job_hours"] == pytest.approx(2.0) and st["expansion"]["gpus_per_job"] == 2
    assert st["expansion"]["gpu_hours"] == pytest.approx(8.0)
    assert r["critical_path_hours"] == pytest.approx(1 + 2 + 1 + 0.5 + 1 + 0.0625 + 2 + 0.25)
    assert r["work_gpu_hours"] == pytest.approx(20 + 7)  # training 2+8+2+4+4, per-image 1+0.5+4+0.5+1
    assert r["projected_hours"] == pytest.approx(7.8125)  # the critical path beats 27 / 4
    assert r["greedy_bound_hours"] == pytest.approx(27 / 4 + 0.75 * 7.8125)
    # 16 GPUs, 8 shards: one wave of 1/8; the work bound 27 / 16 is below the path.
    r16 = scaleout.project(rates, jobs, gpus=16, shards=8, gpus_per_node=2, efficiency=0.5)
    assert r16["critical_path_hours"] == pytest.approx(1 + 2 + 1 + 0.25 + 1 + 0.03125 + 2 + 0.125)
    assert r16["projected_hours"] == pytest.approx(r16["critical_path_hours"])
    # Perfect DDP on 2 GPUs halves a training job and keeps its GPU hours.
    r2 = scaleout.project(rates, jobs, gpus=4, shards=8, gpus_per_node=2, efficiency=1.0)
    assert r2["stages"]["deeplab_train"]["job_hours"] == pytest.approx(1.0)
    assert r2["stages"]["deeplab_train"]["gpu_hours"] == pytest.approx(2.0)


def test_scaleout_counts_the_voc_configs_jobs():
    cfg = yaml.safe_load((REPO / "config" / "voc12.yaml").read_text())
    jobs = scaleout.stage_jobs(cfg)
    assert jobs["classifier"] == (1, 5 * (10582 // 16) * 16)
    assert jobs["expansion"][0] == 2  # clipped and unclipped
    assert jobs["make_cam_esol"] == (len(cfg["methods"]) - 1, 1464)
    assert jobs["irn_random_walk"] == (len(cfg["refine"]["methods"]), 10582)
    # The recorded H100 table: rate x hours gives back its images.
    rates = scaleout.recorded_rates("voc12", "fp32")
    assert rates["classifier"] * 0.06 * 3600 == pytest.approx(52_880)
