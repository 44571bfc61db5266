"""Sharded CAM extraction: N make_cam jobs per method and split, joined by gather_cams."""

import copy
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from conftest import REPO, load_config
from esol.cam import gather_cams, make_cams, shard_ids
from esol.data.voc import prepare_dataset
from esol.utils import DatasetError
from test_cam import KnownNet


def test_shards_partition_the_split_in_order():
    ids = [f"i{k}" for k in range(7)]
    parts = [shard_ids(ids, k, 3) for k in range(3)]
    assert parts == [["i0", "i3", "i6"], ["i1", "i4"], ["i2", "i5"]]
    assert sorted(sum(parts, [])) == sorted(ids)
    with pytest.raises(ValueError):
        shard_ids(ids, 3, 3)


def _datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
        return out, dict(f.attrs), list(f)


def test_three_shards_gather_into_the_unsharded_file(tiny_voc, tmp_path):
    info = prepare_dataset(tiny_voc, ["one", "two", "three"], ["train_aug"])
    net = KnownNet(classes=3)
    whole = tmp_path / "whole.h5"
    make_cams(net, info, "train_aug", whole, [1.0, 0.5], True, "cpu")
    shards = [tmp_path / f"s{k}.h5" for k in range(3)]
    for k, p in enumerate(shards):
        make_cams(net, info, "train_aug", p, [1.0, 0.5], True, "cpu", shard=(k, 3))
    gathered = tmp_path / "gathered.h5"
    assert gather_cams(shards, gathered, info.ids("train_aug")) == 3
    a, attrs_a, order_a = _datasets(whole)
    b, attrs_b, order_b = _datasets(gathered)
    assert order_a == order_b and a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert attrs_a.keys() == attrs_b.keys()


def test_gather_refuses_a_missing_image_and_mismatched_shards(tiny_voc, tmp_path):
    info = prepare_dataset(tiny_voc, ["one", "two", "three"], ["train_aug"])
    shards = [tmp_path / f"s{k}.h5" for k in range(2)]
    for k, p in enumerate(shards):
        make_cams(KnownNet(classes=3), info, "train_aug", p, [1.0], False, "cpu", shard=(k, 2))
    with pytest.raises(DatasetError, match="lack 1 images"):
        gather_cams(shards[:1], tmp_path / "g.h5", info.ids("train_aug"))
    with h5py.File(shards[1], "a") as f:
        f.attrs["scales"] = [2.0]
    with pytest.raises(DatasetError, match="different settings"):
        gather_cams(shards, tmp_path / "g.h5", info.ids("train_aug"))
    assert not (tmp_path / "g.h5").exists()


def _planned(tmp_path, shards):
    cfg = copy.deepcopy(load_config())
    cfg["shards"] = shards
    work = tmp_path / f"s{shards}"
    work.mkdir()
    (work / "c.yaml").write_text(yaml.safe_dump(cfg))
    run = subprocess.run([Path(sys.executable).parent / "snakemake", "-s", REPO / "workflow" / "Snakefile",
                          "-d", work, "--configfile", work / "c.yaml", "-n", "--quiet", "rules"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return {line.split()[0]: int(line.split()[1]) for line in run.stdout.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}


def test_dry_run_plans_shard_jobs_and_one_gather_per_method_and_split(tmp_path):
    cam_files = _planned(tmp_path, 1)["make_cam"]  # one CAM file per (method, split)
    sharded = _planned(tmp_path, 3)
    assert sharded["gather_cams"] == cam_files >= 4
    assert sharded["make_cam"] == 3 * cam_files
