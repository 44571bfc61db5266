"""External seed methods: CAMs made by other code imported into the store (rule
import_cams, esol/cam_io.py import_external) and planned like any other method."""

import copy
import re
import subprocess

import numpy as np
import pytest
import yaml

from conftest import REPO, load_config
from esol.cam import CamStore, make_cams
from esol.cam_io import export_irn_npy, import_external
from esol.data.voc import prepare_dataset
from esol.evaluate import evaluate_seeds
from esol.report import baseline_method, paper_table6
from esol.utils import DatasetError
from test_cam import KnownNet
from test_workflow import SNAKEMAKE


@pytest.fixture
def made(tiny_voc, tmp_path):
    """The tiny dataset, its dataset.json, and our CAM file of train_aug exported as IRN .npy."""
    info = prepare_dataset(tiny_voc, ["one", "two", "three"], ["train_aug", "train", "val"])
    info.to_json(tmp_path / "dataset.json")
    ours = tmp_path / "ours.h5"
    make_cams(KnownNet(classes=3), info, "train_aug", ours, scales=[1.0], flip=False, device="cpu")
    export_irn_npy(ours, tmp_path / "npy")
    return info, tmp_path / "dataset.json", ours, tmp_path / "npy"


def _same_store(a_path, b_path, ids):
    with CamStore(a_path) as a, CamStore(b_path) as b:
        for i in ids:
            np.testing.assert_array_equal(a[i].keys, b[i].keys)
            np.testing.assert_array_equal(a[i].cam, b[i].cam)
            np.testing.assert_array_equal(a[i].high_res, b[i].high_res)


def test_npy_folder_round_trips_into_the_store_with_the_same_seed_miou(made, tmp_path):
    info, dataset_json, ours, npy = made
    out = tmp_path / "cams" / "train_aug.h5"
    assert import_external(npy, out, dataset_json, "train_aug", manifest="m") == 3
    _same_store(ours, out, info.ids("train_aug"))
    t = np.arange(0.05, 0.95, 0.05)
    assert evaluate_seeds(out, info, "train_aug", t)[0]["miou"] == \
        evaluate_seeds(ours, info, "train_aug", t)[0]["miou"]
    with CamStore(out) as s:  # what reads the file fingerprints this
        assert '"manifest": "m"' in str(s.attrs["inputs"])


def test_h5_source_gives_the_split_subset(made, tmp_path):
    info, dataset_json, ours, _ = made
    out = tmp_path / "train.h5"
    assert import_external(ours, out, dataset_json, "train") == 2
    with CamStore(out) as s:
        assert sorted(s.ids()) == ["a", "b"]
    _same_store(ours, out, ["a", "b"])


def test_missing_file_names_the_first_one(made, tmp_path):
    _, dataset_json, ours, npy = made
    (npy / "b.npy").unlink()
    with pytest.raises(DatasetError, match=r"1 of 3 images .*have no file in .*/b\.npy$"):
        import_external(npy, tmp_path / "x.h5", dataset_json, "train_aug")
    assert not (tmp_path / "x.h5").exists()


def test_missing_image_in_h5_is_named(made, tmp_path):
    info, dataset_json, ours, _ = made
    partial = tmp_path / "part.h5"
    make_cams(KnownNet(classes=3), info, "train", partial, scales=[1.0], flip=False, device="cpu")
    with pytest.raises(DatasetError, match=r"1 of 3 images .* not in .*part\.h5, first 'c'"):
        import_external(partial, tmp_path / "x.h5", dataset_json, "train_aug")


def _rewrite(npy_file, **change):
    d = np.load(npy_file, allow_pickle=True).item()
    d.update(change)
    np.save(npy_file, d, allow_pickle=True)


def test_wrong_size_is_one_line_naming_the_file(made, tmp_path):
    _, dataset_json, _, npy = made
    d = np.load(npy / "a.npy", allow_pickle=True).item()
    high = np.asarray(d["high_res"])[:, :8, :12]  # 8x12, the image is 12x16
    _rewrite(npy / "a.npy", high_res=high, cam=np.zeros((high.shape[0], 2, 3), np.float32))
    with pytest.raises(DatasetError) as err:
        import_external(npy, tmp_path / "x.h5", dataset_json, "train_aug")
    msg = str(err.value)
    assert "\n" not in msg and "a.npy" in msg and "(8, 12)" in msg and "(12, 16)" in msg


def test_wrong_class_count_is_one_line(made, tmp_path):
    _, dataset_json, _, npy = made
    d = np.load(npy / "b.npy", allow_pickle=True).item()
    _rewrite(npy / "b.npy", keys=np.array([1, 5]))  # class 5 (0-based) of a 3-class dataset
    with pytest.raises(DatasetError, match=r"b\.npy: class index 5 outside 0\.\.2") as err:
        import_external(npy, tmp_path / "x.h5", dataset_json, "train_aug")
    assert "\n" not in str(err.value)
    _rewrite(npy / "b.npy", keys=d["keys"][:1], cam=d["cam"][:1], high_res=d["high_res"][:1])
    with pytest.raises(DatasetError, match=r"b\.npy: classes \[1\] differ from the image label \[1, 2\]"):
        import_external(npy, tmp_path / "x.h5", dataset_json, "train_aug")


def planned_jobs(target, configfile, workdir):
    """{rule: job count} of ``snakemake -n --forceall target``."""
    run = subprocess.run([SNAKEMAKE, target, "-s", str(REPO / "workflow" / "Snakefile"), "-d",
                          str(workdir), "-n", "--forceall", "--configfile", str(configfile),
                          "--quiet", "rules"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    jobs = {r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)$", run.stdout, flags=re.M)}
    assert jobs, run.stdout[-2000:]
    return jobs


def external_config(tmp_path, source):
    cfg = copy.deepcopy(load_config())
    cfg["methods"] = {"myseeds": {"external": str(source)}}
    cfg["refine"]["methods"] = ["myseeds"]
    cfg["segmentation"].update(supervised=False, methods=["myseeds"])
    cfg["figures"].update(fig5_methods=["myseeds"], recall_methods=["myseeds"])
    path = tmp_path / "external.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return cfg, path


def test_dry_run_imports_external_cams_and_trains_no_network_for_them(tmp_path):
    (tmp_path / "npy").mkdir()
    cfg, path = external_config(tmp_path, tmp_path / "npy")
    name = cfg["dataset"]["name"]
    seeds = planned_jobs(f"results/{name}/seeds/myseeds/{cfg['dataset']['seed_split']}.json",
                         path, tmp_path / "work")
    # The seed split is read from the training split's file (a refined method), and the
    # preset threshold is tuned on the tuning split: two imports, nothing of ours.
    assert seeds.get("import_cams") == 2, seeds
    assert not {"make_cam", "make_advcam", "gather_cams", "train_classifier",
                "train_expansion", "train_shrinkage"} & set(seeds), seeds
    whole = planned_jobs(f"results/{name}/report/report.md", path, tmp_path / "work")
    assert {"import_cams", "pseudo_masks", "eval_mask", "table1", "train_segmentation",
            "eval_segmentation"} <= set(whole), whole
    assert "make_cam" not in whole, whole


def test_external_source_that_is_not_there_is_a_config_error(tmp_path):
    _, path = external_config(tmp_path, tmp_path / "nowhere")
    run = subprocess.run([SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "-d",
                          str(tmp_path / "work"), "-n", "--configfile", str(path)],
                         capture_output=True, text=True)
    assert run.returncode != 0
    out = run.stdout + run.stderr  # Snakemake prints a parse error on stdout
    assert "config key methods.myseeds.external:" in out and "nowhere" in out, out[-2000:]


def test_unknown_key_of_an_external_method_is_named(tmp_path):
    cfg, path = external_config(tmp_path, tmp_path)
    cfg["methods"]["myseeds"]["extrenal_typo"] = 1
    path.write_text(yaml.safe_dump(cfg))
    run = subprocess.run([SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "-d",
                          str(tmp_path / "work"), "-n", "--configfile", str(path)],
                         capture_output=True, text=True)
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "config: unknown key methods.myseeds.extrenal_typo" in out, out[-2000:]


def test_an_external_method_is_neither_the_baseline_nor_a_paper_row():
    # As common.smk's METHOD_SPECS gives it to compare_seeds: every switch off.
    off = dict.fromkeys(["expansion_offsets", "clipping", "shrinkage", "shrinkage_offsets",
                         "area_loss"], False)
    methods = {"myseeds": {**off, "external": "cams/"}, "cam": off}
    assert paper_table6(methods["myseeds"]) is None
    assert paper_table6(off) == 48.4
    assert baseline_method(methods) == "cam"
