"""Sharded per-image rules: N shard jobs per method and split, joined by a gather step
(gather_cams for CAM files; gather_crf_seed and gather_predictions for label folders)."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, load_config
from esol.cam import gather_cams, make_cams
from esol.crf import DEEPLAB_CRF
from esol.data.voc import prepare_dataset, write_label
from esol.engine import fingerprint
from esol.labeldir import SHARD_STAMP, LabelDir, dir_digest, gather_label_dirs, gather_split
from esol.refine import crf_seeds
from esol.segmentation.predict import gather_predictions, predict_split
from esol.shards import shard_ids
from esol.utils import DatasetError
from test_cam import KnownNet
from test_refine import refine_case  # noqa: F401  (a fixture)
from test_segmentation import ColourNet


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


def _same_folders(a: Path, b: Path) -> None:
    """Folder ``b`` holds exactly ``a``'s files, byte for byte."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_three_crf_shards_gather_into_the_unsharded_folder(refine_case, tmp_path):  # noqa: F811
    cfg, info, dataset_json, cams = refine_case
    whole = tmp_path / "whole"
    crf_seeds(cfg, dataset_json, cams, "train_aug", "preset", None, whole)
    shards = [tmp_path / "shards" / f"train_aug.shard{k}of3" for k in range(3)]
    for k, folder in enumerate(shards):
        crf_seeds(cfg, dataset_json, cams, "train_aug", "preset", None, folder, shard=(k, 3))
        assert sorted(p.name for p in folder.iterdir()) == \
            sorted([f"{i}.png" for i in shard_ids(info.ids("train_aug"), k, 3)] + [SHARD_STAMP])
    gathered = tmp_path / "gathered"
    assert gather_split(dataset_json, "train_aug", shards, gathered) == 3
    assert sorted(p.name for p in whole.iterdir()) == ["a.png", "b.png", "c.png"]
    _same_folders(whole, gathered)
    assert dir_digest(whole) == dir_digest(gathered)
    assert not (tmp_path / "gathered.partial").exists()


def test_three_prediction_shards_gather_into_the_unsharded_folders(tiny_voc, tmp_path):
    info = prepare_dataset(tiny_voc, ["a", "b", "c"], ["train_aug", "train", "val"])
    dataset_json = tmp_path / "dataset.json"
    info.to_json(dataset_json)
    args = ([1.0, 0.5], True, DEEPLAB_CRF, torch.device("cpu"))
    predict_split(ColourNet(), info, "train_aug", tmp_path / "raw", tmp_path / "crf", *args)
    parts = {kind: [tmp_path / "shards" / f"{kind}.shard{k}of3" for k in range(3)]
             for kind in ("raw", "crf")}
    for k in range(3):
        assert predict_split(ColourNet(), info, "train_aug", parts["raw"][k], parts["crf"][k],
                             *args, shard=(k, 3)) == 1
    cfg = {"checks": {"enabled": True, "min_predicted_classes": 2}}
    assert gather_predictions(cfg, dataset_json, "train_aug", parts["raw"], parts["crf"],
                              tmp_path / "g_raw", tmp_path / "g_crf") == 3
    _same_folders(tmp_path / "raw", tmp_path / "g_raw")
    _same_folders(tmp_path / "crf", tmp_path / "g_crf")


def _label_shards(tmp_path, ids, n, inputs=None):
    folders = []
    for k in range(n):
        target = LabelDir(tmp_path / f"part{k}", inputs or {"cams": "x"}, shard=(k, n))
        for i in target.todo(shard_ids(ids, k, n)):
            write_label(target.partial / f"{i}.png", np.full((2, 2), ord(i[-1]) % 7, np.uint8))
        target.finish()
        folders.append(target.path)
    return folders


def test_gather_refuses_missing_extra_swapped_unfinished_and_mismatched_shards(tmp_path):
    ids = ["i0", "i1", "i2", "i3", "i4"]
    out = tmp_path / "out"

    def refused(folders, match):
        with pytest.raises(DatasetError, match=match):
            gather_label_dirs(folders, out, ids)
        assert not out.exists()

    good = _label_shards(tmp_path, ids, 3)
    refused(good[:2], "part 0 of 3, but is gathered as part 0 of 2")
    refused([good[1], good[0], good[2]], "part 1 of 3, but is gathered as part 0 of 3")
    (good[1] / "i1.png").rename(tmp_path / "i1.png")
    refused(good, "part1 lacks 1 of its 2 images, first 'i1'")
    (tmp_path / "i1.png").rename(good[1] / "i1.png")
    write_label(good[2] / "i9.png", np.zeros((2, 2), np.uint8))
    refused(good, "part2 holds 1 images not in its part, first 'i9'")
    (good[2] / "i9.png").unlink()
    other = _label_shards(tmp_path / "other", ids, 3, {"cams": "y"})
    refused([good[0], other[1], good[2]], "different inputs")
    (good[0] / SHARD_STAMP).unlink()
    refused(good, "no readable shard.json")


def test_a_shard_resumes_its_own_part_only_and_a_gather_resumes(tmp_path):
    first = LabelDir(tmp_path / "part", {"cams": "x"}, shard=(0, 2))
    write_label(first.partial / "i0.png", np.zeros((2, 2), np.uint8))
    assert LabelDir(tmp_path / "part", {"cams": "x"}, shard=(0, 2)).todo(["i0", "i2"]) == ["i2"]
    # The same folder name as part 0 of 3 holds other images: its partial is discarded.
    assert LabelDir(tmp_path / "part", {"cams": "x"}, shard=(0, 3)).todo(["i0", "i3"]) == ["i0", "i3"]
    ids = ["i0", "i1", "i2"]
    folders = _label_shards(tmp_path / "g", ids, 2)
    gather_label_dirs(folders, tmp_path / "whole", ids)
    # A gather killed after placing one file resumes with the others.
    (tmp_path / "whole").rename(tmp_path / "whole.partial")
    (tmp_path / "whole.partial" / "i1.png").unlink()
    stamp = json.loads((folders[0] / SHARD_STAMP).read_text())["inputs"]
    (tmp_path / "whole.partial" / "inputs.fingerprint").write_text(
        fingerprint({"gather": stamp, "shards": 2, "ids": ids}))
    gather_label_dirs(folders, tmp_path / "whole", ids)
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == ["i0.png", "i1.png", "i2.png"]
    for i in ids:
        part = folders[ids.index(i) % 2]
        assert (tmp_path / "whole" / f"{i}.png").read_bytes() == (part / f"{i}.png").read_bytes()


def _planned(tmp_path, shards):
    cfg = copy.deepcopy(load_config())
    cfg["shards"] = shards
    cfg["refine"]["refiners"] = ["irn", "psa"]  # the demo runs IRN only
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
    whole = _planned(tmp_path, 1)  # one job per (method, split[, threshold choice])
    sharded = _planned(tmp_path, 3)
    pairs = (("make_cam", "gather_cams"), ("crf_seed", "gather_crf_seed"),
             ("predict_segmentation", "gather_predictions"), ("ir_labels", "gather_ir_labels"),
             ("pseudo_masks", "gather_pseudo_masks"), ("psa_masks", "gather_psa_masks"))
    for rule, gather in pairs:
        assert whole[rule] >= 2 and gather not in whole, rule
        assert sharded[rule] == 3 * whole[rule], rule
        assert sharded[gather] == whole[rule], rule
    # Every other rule runs as often as unsharded.
    rest = {r: n for r, n in sharded.items()
            if r not in {name for pair in pairs for name in pair} | {"total"}}
    assert rest == {r: n for r, n in whole.items() if r in rest}
