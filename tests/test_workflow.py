"""End to end: the whole DAG on a tiny config, in a temporary directory, through Snakemake."""

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, load_config, module_scratch

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def tiny_config() -> dict:
    cfg = copy.deepcopy(load_config())
    cfg["device"] = "cpu"
    # float32 here (the demo runs bf16): bf16 numerics on 96-px crops let esol_noarea's
    # offsets pass the divergence bound within one epoch.
    cfg["amp"] = "fp32"
    cfg["dataset"]["name"] = "tiny"
    cfg["dataset"]["synthetic"].update(
        num_classes=2, image_size=[96, 104], counts={"train_aug": 48, "train": 16, "val": 8, "test": 3, "tune": 8},
        body_signal=0.5, clutter=[1, 3])
    cfg["dataset"]["test_splits"] = ["test"]
    cfg["classifier"].update(epochs=4, batch_size=8, resize_long=[88, 112], crop=96, lr=0.05)
    for stage in ("expansion", "shrinkage"):
        cfg[stage].update(epochs=1, batch_size=8)
    # A barely trained classifier gives large ascent gradients: step gently.
    cfg["expansion"]["lr"] = 0.001
    cfg["shrinkage"]["lr"] = 0.001
    cfg["cam"]["scales"] = [1.0, 2.0]
    cfg["methods"]["fl"] = {"expansion_offsets": False, "clipping": True, "shrinkage": False,
                            "shrinkage_offsets": False, "area_loss": False}
    cfg["methods"]["esol_noarea"] = dict(cfg["methods"]["esol"], area_loss=False)
    cfg["figures"]["fig5_images"] = 3
    cfg["refine"]["grid_images"] = 2
    cfg["irn"]["train"].update(crop=64, batch_size=8, epochs=1)
    # Both refiners (Table 1's two Mask columns); PSA as small as IRN.
    cfg["refine"]["refiners"] = ["irn", "psa"]
    cfg["psa"]["train"].update(crop=64, batch_size=8, epochs=1)
    # DeepLab on the ground truth (the supervised row) and on esol's pseudo masks.
    cfg["segmentation"].update(supervised=True, methods=["esol"])
    cfg["segmentation"]["train"].update(epochs=2, batch_size=8, crop=64)
    cfg["segmentation"]["predict"]["scales"] = [0.75, 1.0]
    cfg["report"]["fig4_images"] = 3
    return cfg


def planned_jobs(target: str, configfile: Path, workdir: Path) -> dict[str, int]:
    """Rule -> number of jobs ``snakemake -n --forceall target`` plans (the dry run's job list)."""
    # The target first: --configfile and --quiet take every word after them.
    run = subprocess.run([SNAKEMAKE, target, "-s", str(REPO / "workflow" / "Snakefile"), "-d",
                          str(workdir), "-n", "--forceall", "--configfile", str(configfile),
                          "--quiet", "rules"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    jobs = {r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)$", run.stdout, flags=re.M)}
    assert jobs, run.stdout[-2000:]
    return jobs


def planned_rules(target: str, configfile: Path, workdir: Path) -> list[str]:
    """Rules of the jobs ``snakemake -n --forceall target`` plans."""
    return list(planned_jobs(target, configfile, workdir))


def _test_config_with(tmp_path: Path, **sections) -> Path:
    """.test's config with some sections updated, written to ``tmp_path``."""
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    for key, value in sections.items():
        cfg[key].update(value)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_each_refiner_has_its_chain_and_one_mask_evaluation_per_method(tmp_path):
    """refine.refiners [irn, psa]: Table 1 plans each refiner's three rules and one
    eval_mask per method and refiner; [irn] alone plans no PSA rule."""
    both = planned_jobs("results/tiny/refine/table1.md",
                        _test_config_with(tmp_path, refine={"refiners": ["irn", "psa"]}), tmp_path)
    methods = 2  # .test's refine.methods: cam, esol
    for rule in ("ir_labels", "train_irn", "pseudo_masks", "psa_labels", "train_psa", "psa_masks"):
        assert both.get(rule) == methods, (rule, both)
    assert both["eval_mask"] == 2 * methods and both["table1"] == 1
    irn = planned_jobs("results/tiny/refine/table1.md",
                       _test_config_with(tmp_path, refine={"refiners": ["irn"]}), tmp_path)
    assert irn["eval_mask"] == methods and not {"psa_labels", "train_psa", "psa_masks"} & set(irn)


def test_segmentation_refiner_chooses_whose_masks_train_deeplab(tmp_path):
    config = _test_config_with(tmp_path, refine={"refiners": ["irn", "psa"]},
                               segmentation={"refiner": "psa"})
    rules = planned_rules("results/tiny/models/deeplab_esol.pt", config, tmp_path)
    assert {"psa_labels", "train_psa", "psa_masks", "train_segmentation"} <= set(rules)
    assert not {"ir_labels", "train_irn", "pseudo_masks"} & set(rules)
    assert not [r for r in rules if r.startswith("eval_")], rules


@pytest.mark.parametrize("sections,message", [
    ({"refine": {"refiners": ["irn", "sam"]}},
     "config key refine.refiners names 'sam', which is no refiner (known: irn, psa"),
    ({"refine": {"refiners": ["irn"]}, "segmentation": {"refiner": "psa"}},
     "config key segmentation.refiner is 'psa', which is not in refine.refiners (['irn'])"),
], ids=["unknown-refiner", "segmentation-refiner-not-run"])
def test_bad_refiner_is_one_line_naming_the_key(tmp_path, sections, message):
    config = _test_config_with(tmp_path, **sections)
    run = subprocess.run([SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(tmp_path),
                          "-n", "--configfile", str(config)], capture_output=True, text=True)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and message in out, out[-2000:]
    assert len(out.splitlines()) < 15, out[-3000:]


@pytest.mark.parametrize("configfile", [REPO / "config" / "config.yaml",
                                        REPO / ".test" / "config" / "config.yaml"],
                         ids=["demo", "test"])
def test_no_evaluation_rule_is_upstream_of_deeplab(configfile, tmp_path):
    """Nothing that trains DeepLab on pseudo masks may read an evaluation result (an eval_*
    rule reads the masks of the split it evaluates, which the pseudo labels cover): its
    dry-run DAG holds the threshold's tuning on the tuning split and no eval_* rule."""
    name = yaml.safe_load(configfile.read_text())["dataset"]["name"]
    rules = planned_rules(f"results/{name}/models/deeplab_esol.pt", configfile, tmp_path)
    assert {"ir_labels", "train_irn", "pseudo_masks", "train_segmentation", "tune_threshold"} <= set(rules)
    assert not [r for r in rules if r.startswith("eval_")], rules


def _all_background_miou(conf: np.ndarray) -> float:
    """mIoU of predicting background everywhere, from a confusion matrix's ground truth."""
    gt = conf.sum(1)
    present = gt > 0
    return float((gt[0] / gt.sum()) / present.sum())


@pytest.fixture(scope="module")
def tiny_run(request, tmp_path_factory):
    for work in module_scratch(request, tmp_path_factory, "e2e"):
        (work / "tiny.yaml").write_text(yaml.safe_dump(tiny_config()))
        run = subprocess.run([SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(work),
                              "--configfile", str(work / "tiny.yaml"), "--cores", "2"],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-4000:]
        yield work, work / "results" / "tiny"


@pytest.mark.slow
def test_every_method_and_variant_has_evaluated_seeds(tiny_run):
    work, res = tiny_run
    for method in ("cam", "expansion_noclip", "expansion", "esol", "fl", "esol_noarea"):
        summary = json.loads((res / "seeds" / method / "train.json").read_text())
        assert summary["images"] == 16 and 0 <= summary["miou"] <= 1
        assert (res / "seeds" / method / "train.csv").is_file()
        assert (res / "seeds" / method / "train.png").stat().st_size > 1000
        # Refined methods (config refine.methods) read their seeds from the train_aug CAMs.
        cam_split = "train_aug" if method in ("cam", "esol") else "train"
        assert (res / "logs" / "make_cam" / method / f"{cam_split}.log").is_file()
    for path in ("table6.md", "table6.csv", "recall_vs_threshold.png", "fig5_grid.png"):
        assert (res / "seeds" / path).is_file()
    table = (res / "seeds" / "table6.md").read_text()
    assert all(f"`{m}`" in table for m in ("cam", "fl", "esol_noarea"))
    # Variants share upstream outputs: one classifier, one Expansion per clipping setting.
    models = sorted(p.name for p in (res / "models").glob("*.pt") if not p.name.startswith("deeplab_"))
    assert models == ["classifier.pt", "expansion_clip.pt", "expansion_noclip.pt", "irn_cam.pt",
                      "irn_esol.pt", "psa_cam.pt", "psa_esol.pt", "shrinkage_esol.pt",
                      "shrinkage_esol_noarea.pt"]
    assert not list(res.rglob("*.partial"))


@pytest.mark.slow
def test_refined_methods_have_seed_crf_and_mask_results(tiny_run):
    _, res = tiny_run
    for method in ("cam", "esol"):  # config refine.methods
        seed = json.loads((res / "seeds" / method / "train.json").read_text())
        crf = json.loads((res / "refine" / method / "crf" / "oracle" / "train.json").read_text())
        crf_p = json.loads((res / "refine" / method / "crf" / "preset" / "train.json").read_text())
        mask = json.loads((res / "refine" / method / "irn" / "masks" / "train.json").read_text())
        psa_mask = json.loads((res / "refine" / method / "psa" / "masks" / "train.json").read_text())
        tuned = json.loads((res / "tune" / method / "tune.json").read_text())
        assert crf["images"] == mask["images"] == 16 and crf["threshold"] == seed["threshold"]
        assert crf["threshold_choice"].startswith("oracle") and tuned["images"] == 8
        assert crf_p["threshold"] == seed["preset"]["threshold"] == tuned["threshold"]
        assert crf_p["threshold_choice"] == seed["preset"]["threshold_choice"] == "tuned on tune"
        assert 0 <= crf["miou"] <= 1 and 0 <= mask["miou"] <= 1 and mask["threshold"] == 0.25
        assert mask["ground_truth"]["masks"] == "SegmentationClass" and mask["refiner"] == "irn"
        assert psa_mask["refiner"] == "psa" and psa_mask["images"] == 16 and 0 <= psa_mask["miou"] <= 1
        assert psa_mask["threshold"] is None and psa_mask["threshold_choice"].startswith("none: argmax")
        for refiner in ("irn", "psa"):
            masks = res / "refine" / method / refiner / "masks" / "train_aug"
            assert len(list(masks.glob("*.png"))) == 48, refiner
        assert len(list((res / "refine" / method / "ir_labels" / "train_aug").glob("*.png"))) == 48
        assert len(list((res / "refine" / method / "psa" / "scores" / "train_aug").glob("*.npz"))) == 48
        # Refined methods read their seeds from the train_aug CAM file: no train file made.
        assert (res / "cams" / method / "train_aug.h5").is_file()
        assert not (res / "cams" / method / "train.h5").exists()
        for rule in ("crf_seed", "ir_labels", "train_irn", "pseudo_masks", "psa_labels", "train_psa",
                     "psa_masks"):
            tsv = (res / "benchmarks" / rule).rglob("*.tsv")
            assert any(method in p.relative_to(res / "benchmarks" / rule).parts or method == p.stem
                       for p in tsv), rule
    table = (res / "refine" / "table1.md").read_text()
    assert "`cam`" in table and "`esol`" in table and "esol_noarea" not in table
    assert (res / "refine" / "table1.csv").read_text().startswith(
        "method,seed_miou_oracle,seed_miou_preset,crf_miou_oracle,crf_miou_preset,mask_miou_irn,"
        "mask_miou_psa,")
    assert "Seed (oracle t)" in table and "tuned on tune" in table
    assert "| Mask (IRN) | Mask (PSA) |" in table
    assert (res / "refine" / "table1_grid.png").stat().st_size > 1000


@pytest.mark.slow
def test_seeds_beat_an_all_background_prediction(tiny_run):
    _, res = tiny_run
    summary = json.loads((res / "seeds" / "cam" / "train.json").read_text())
    floor = _all_background_miou(np.array(summary["confusion"]))
    assert summary["miou"] > floor + 0.05, (summary["miou"], floor)


@pytest.mark.slow
def test_rerun_has_nothing_to_do(tiny_run):
    work, _ = tiny_run
    run = subprocess.run([SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(work), "--configfile",
                          str(work / "tiny.yaml"), "-n"], capture_output=True, text=True)
    assert run.returncode == 0 and "Nothing to be done" in run.stdout + run.stderr


@pytest.mark.slow
def test_segmentation_is_predicted_evaluated_and_submitted(tiny_run):
    _, res = tiny_run
    scores = json.loads((res / "segmentation" / "gt" / "val.json").read_text())
    assert scores["images"] == 8
    for kind in ("raw", "crf"):
        assert 0 <= scores[kind]["miou"] <= 1
        assert len(list((res / "segmentation" / "gt" / "val" / kind).glob("*.png"))) == 8
    folder = res / "segmentation" / "gt" / "test" / "submission" / "results" / "VOC2012" / "Segmentation"
    assert sorted(p.name for p in (folder / "comp6_test_cls").glob("*.png")) == [
        "t00000.png", "t00001.png", "t00002.png"]
    assert (res / "benchmarks" / "train_segmentation" / "gt.tsv").is_file()


@pytest.mark.slow
def test_report_has_every_table_and_its_links_resolve(tiny_run):
    _, res = tiny_run
    report = res / "report" / "report.md"
    text = report.read_text()
    for heading in ("## Table 3", "## Table 1", "## Table 6", "## Fig. 5", "## Time per rule"):
        assert heading in text, heading
    assert "| `esol` |" in text.split("## Table 1")[1].split("## Table 6")[0]  # refine's table
    assert "| ground truth (fully supervised) |" in text and "| `esol` pseudo masks |" in text
    assert "`train_segmentation`" in text and "`train_classifier`" in text
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert {"fig4_segmentation.png", "threshold_curves.png", "fig5_grid.png", "times.png",
            "../refine/table1_grid.png", "../refine/table1.csv"} <= set(links)
    for link in links:
        target = report.parent / link
        assert target.is_file() and target.stat().st_size > 0, link
    for png in (p for p in links if p.endswith(".png")):
        assert (report.parent / png).read_bytes()[:4] == b"\x89PNG"
    assert "training/classifier.png" in links and "training/irn_esol.png" in links
    assert "training/psa_esol.png" in links
    for page in ("table1", "table3", "table6", "times"):  # what Snakemake's HTML report shows
        assert "<table>" in (report.parent / f"{page}.html").read_text(), page


@pytest.mark.slow
def test_snakemake_html_report(tiny_run):
    work, _ = tiny_run
    run = subprocess.run([SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(work), "--configfile",
                          str(work / "tiny.yaml"), "--report", str(work / "report.html")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    html = (work / "report.html").read_text()
    assert "fig4_segmentation.png" in html
    # Tables are registered as HTML pages, which the report shows in the page (a CSV is
    # only offered as a download); training curves one figure per stage.
    for name in ("table1.html", "table3.html", "table6.html", "times.html", "full_report.html",
                 "classifier.png", "deeplab_gt.png", "times.png", "threshold_curves.png"):
        assert name in html, name
