"""Rule resources (workflow/rules/resources.smk): defaults from the config, by hand, and
their overrides by profiles and the command line, read from Snakemake's dry run."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, load_config

pytestmark = pytest.mark.slow  # a Snakemake dry run each (a few seconds)

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
NETWORK_RULES = {"train_classifier", "train_expansion", "train_shrinkage", "make_cam", "train_irn",
                 "train_psa", "psa_masks",
                 "pseudo_masks", "train_segmentation", "predict_segmentation"}
# Seconds per training pixel of ResNet-50 on 2 cores (13 s for 8 crops of 512x512).
R50_S_PER_PX = 13 / (8 * 512 * 512)


def dry_run_jobs(work: Path, cfg: dict, *args: str) -> dict[str, dict]:
    """rule name -> {"threads": int, "resources": {name: str}} of the first job per rule."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(work), "-n",
                          "--configfile", str(work / "config.yaml"), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs: dict[str, dict] = {}
    current = None
    for line in out.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            name = line.split()[1].rstrip(":")
            current = None if name in jobs else jobs.setdefault(name, {"threads": 1, "resources": {}})
        elif current is not None and line.strip().startswith("threads:"):
            current["threads"] = int(line.split(":")[1])
        elif current is not None and line.strip().startswith("resources:"):
            pairs = line.split(":", 1)[1].split(", ")
            current["resources"] = dict(p.strip().split("=", 1) for p in pairs)
    return jobs


def _small(device: str = "cpu") -> dict:
    cfg = copy.deepcopy(load_config())
    cfg["device"] = device
    cfg["dataset"]["synthetic"]["counts"] = {"train_aug": 16, "train": 8, "val": 4, "test": 0}
    cfg["dataset"]["synthetic"]["image_size"] = [64, 72]
    cfg["classifier"].update(epochs=1, batch_size=8, crop=64)
    cfg["cam"] = {"scales": [1.0], "flip": True}
    cfg["refine"]["refiners"] = ["irn", "psa"]  # the demo leaves PSA to demo-extras
    return cfg


@pytest.mark.parametrize("device,gpus", [("auto", "1"), ("cuda:1", "1"), ("cpu", "0")])
def test_network_rules_ask_for_a_gpu_unless_the_device_is_cpu(tmp_path, device, gpus):
    jobs = dry_run_jobs(tmp_path, _small(device))
    for rule, job in jobs.items():
        if rule in NETWORK_RULES:
            assert job["resources"]["gpu"] == gpus, (rule, job)
        else:
            assert "gpu" not in job["resources"], (rule, job)


def test_defaults_of_a_small_cpu_config_by_hand(tmp_path):
    jobs = dry_run_jobs(tmp_path, _small("cpu"), "--cores", "8")
    clf = jobs["train_classifier"]
    # ResNet-18 on the CPU: 1.5 x (800 process + 200 state + 8 x 64 x 64 px x 800 B) MB,
    # rounded up to 250 MB: 1.5 x 1025 = 1537.5 -> 1750.
    assert clf["resources"]["mem_mb"] == "1750"
    # 16 images x 1 epoch x 64^2 px x (R50 rate x 1.8/4.1 GFLOPs) = 0.18 s, x3 -> 1 min + 10.
    assert clf["resources"]["runtime"] == "11"
    assert clf["threads"] == 8
    # make_cam: 72^2 px x 2 (flip) x 270 B = 2.7 MB over 800 MB: 1.5 x 802.7 -> 1250.
    assert jobs["make_cam"]["resources"]["mem_mb"] == "1250"
    assert jobs["prepare_data"]["threads"] == 4
    assert jobs["eval_seed"]["threads"] == 1 and jobs["eval_seed"]["resources"]["runtime"] == "11"


def test_defaults_grow_with_a_full_scale_config(tmp_path):
    """A VOC-layout config: ResNet-50, batch 16, crop 512, 1000 training ids in its list."""
    root = tmp_path / "voc"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split, n in (("train_aug", 1000), ("train", 300), ("val", 100)):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
            "".join(f"img{i}\n" for i in range(n)))
    cfg = copy.deepcopy(load_config())
    cfg["dataset"].update(name="voc", source="voc", root=str(root),
                          splits=["train_aug", "train", "val"], tuning_split=None)
    cfg["refine"]["threshold"] = 0.15
    cfg["refine"]["refiners"] = ["irn", "psa"]
    cfg["model"]["backbone"]["depth"] = 50
    cfg["classifier"].update(epochs=5, batch_size=16, crop=512)
    small = dry_run_jobs(tmp_path / "small", _small("cuda"))
    for device, mem in (("cpu", "21750"), ("cuda", "5500")):
        cfg["device"] = device
        jobs = dry_run_jobs(tmp_path / device, cfg)
        clf = jobs["train_classifier"]["resources"]
        # CPU: 1.5 x (1100 + 900 + 16 x 512^2 x 3100 B = 12400) = 21600 -> 21750 MB.
        # CUDA: activations live on the GPU: 1.5 x (1100 + 2500 CUDA context) -> 5500 MB.
        assert clf["mem_mb"] == mem
        if device == "cuda":
            # 1000 x 5 x 512^2 px x R50 rate / 20 (GPU) x 3 = 1218.75 s -> 21 min + 10.
            assert clf["runtime"] == "31"
            for rule in NETWORK_RULES | {"eval_seed", "prepare_data"}:
                big, tiny = jobs[rule]["resources"], small[rule]["resources"]
                assert int(big["runtime"]) >= int(tiny["runtime"]), rule
                assert int(big["mem_mb"]) >= int(tiny["mem_mb"]), rule
    assert 1000 * 5 * 512 * 512 * R50_S_PER_PX / 20 * 3 / 60 == pytest.approx(20.3125)


def test_command_line_and_profiles_override_without_editing_rules(tmp_path):
    jobs = dry_run_jobs(tmp_path / "cli", _small(), "--cores", "8", "--set-resources",
                        "train_classifier:mem_mb=1234", "make_cam:gpu=2", "--set-threads",
                        "train_classifier=3")
    assert jobs["train_classifier"]["resources"]["mem_mb"] == "1234"
    assert jobs["train_classifier"]["threads"] == 3
    assert jobs["make_cam"]["resources"]["gpu"] == "2"
    for profile in ("local", "slurm", "slurm-generic"):
        jobs = dry_run_jobs(tmp_path / profile, _small(), "--profile", str(REPO / "profiles" / profile))
        assert jobs["train_classifier"]["resources"]["mem_mb"] == "1750", profile
