"""Method variants with stage overrides, and Figure 6 sweeps (esol/sweeps.py and the
DAG they plan: workflow/rules/common.smk, workflow/rules/sweeps.smk)."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, load_config
from esol.sweeps import (
    check_overrides,
    effective_section,
    expand_sweeps,
    expansion_tag,
    plot_sweep,
    read_sweep_table,
    sweep_rows,
    variant_name,
)

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
ESOL = {"expansion_offsets": True, "clipping": True, "shrinkage": True, "shrinkage_offsets": True,
        "area_loss": True}
CAM = {k: False for k in ESOL}
EXP = {"alpha": 0.01, "clip_beta": 0.15, "lr": 0.01, "epochs": 3}
SHR = {"gamma": 1.0, "mu": 0.5, "lr": 0.1, "epochs": 3}


# -- pure helpers ---------------------------------------------------------------------


def test_expansion_tag_names_only_the_settings_that_differ():
    assert expansion_tag(True, EXP, EXP) == "clip"
    assert expansion_tag(False, EXP, EXP) == "noclip"
    assert expansion_tag(True, EXP, {**EXP, "alpha": 0.03}) == "clip-alpha0.03"
    assert expansion_tag(True, EXP, {**EXP, "alpha": 0.003, "lr": 1e-3}) == "clip-alpha0.003-lr0.001"
    # clip_beta changes nothing without clipping: the noclip model is shared.
    assert expansion_tag(False, EXP, {**EXP, "clip_beta": 0.3}) == "noclip"
    assert expansion_tag(True, EXP, {**EXP, "clip_beta": 0.3}) == "clip-clipbeta0.3"


def test_effective_section_applies_only_its_stage():
    over = {"expansion.alpha": 0.1, "shrinkage.mu": 0.2}
    assert effective_section(EXP, "expansion", over) == {**EXP, "alpha": 0.1}
    assert effective_section(SHR, "shrinkage", over) == {**SHR, "mu": 0.2}
    assert effective_section(SHR, "shrinkage", None) == SHR


def test_unknown_override_is_an_error_naming_the_key():
    check_overrides("methods.x.overrides", {"expansion.alpha": 1, "shrinkage.gamma": 2})
    for bad in ("expansion.alfa", "model.kernel_size", "classifier.lr", "alpha"):
        with pytest.raises(ValueError, match=re.escape(f"methods.x.overrides.{bad}")):
            check_overrides("methods.x.overrides", {bad: 1})


def test_sweep_expands_to_variants_and_reuses_the_base_at_its_own_value():
    methods = {"cam": CAM, "esol": ESOL}
    sweeps = {"mu": {"base": "esol", "key": "shrinkage.mu", "values": [1.0, 0.5, 0.1]}}
    variants, members = expand_sweeps(methods, sweeps, {"expansion": EXP, "shrinkage": SHR})
    assert members["mu"] == [(0.1, "esol_mu0.1"), (0.5, "esol"), (1.0, "esol_mu1")]
    assert set(variants) == {"esol_mu0.1", "esol_mu1"}
    assert variants["esol_mu0.1"]["overrides"] == {"shrinkage.mu": 0.1}
    assert variant_name("esol", "alpha", 0.003) == "esol_alpha0.003"
    with pytest.raises(ValueError, match=r"sweeps\.mu\.key\.shrinkage\.nu"):
        expand_sweeps(methods, {"mu": {"base": "esol", "key": "shrinkage.nu", "values": [1]}},
                      {"expansion": EXP, "shrinkage": SHR})
    with pytest.raises(ValueError, match=r"sweeps\.mu\.base names 'esl'"):
        expand_sweeps(methods, {"mu": {"base": "esl", "key": "shrinkage.mu", "values": [1]}},
                      {"expansion": EXP, "shrinkage": SHR})


def test_sweep_rows_read_precision_and_recall_at_the_baselines_threshold():
    summaries = {"a": {"miou": 0.5, "threshold": 0.3, "precision": 0.6, "recall": 0.7},
                 "b": {"miou": 0.4, "threshold": 0.5, "precision": 0.8, "recall": 0.5}}
    curves = {m: {"threshold": [0.2, 0.3, 0.4], "precision": [0.1, 0.2, 0.3],
                  "recall": [0.9, 0.8, 0.7]} for m in summaries}
    rows = sweep_rows([(0.01, "a"), (0.1, "b")], summaries, curves, t0=0.39)
    # t0 = 0.39 is nearest to the grid's 0.4: precision 0.3, recall 0.7 for both.
    assert [(r["t0"], r["precision_at_t0"], r["recall_at_t0"]) for r in rows] == [(0.4, 0.3, 0.7)] * 2
    # Without a baseline, each member's own best threshold (0.3 for a).
    assert sweep_rows([(0.01, "a")], summaries, curves, t0=None)[0]["precision_at_t0"] == 0.2


def test_figure6_panel_from_a_hand_made_csv(tmp_path):
    csv = tmp_path / "alpha.csv"
    csv.write_text("value,method,miou,threshold,precision,recall,t0,precision_at_t0,recall_at_t0\n"
                   "0.001,esol_alpha0.001,0.40,0.30,0.70,0.50,0.30,0.70,0.50\n"
                   "0.01,esol,0.45,0.35,0.65,0.60,0.30,0.62,0.66\n"
                   "0.1,esol_alpha0.1,0.42,0.40,0.60,0.55,0.30,0.55,0.70\n")
    png = tmp_path / "alpha.png"
    rows = plot_sweep(csv, png, "expansion.alpha", log_x=True)
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert [r["value"] for r in rows] == [0.001, 0.01, 0.1]
    assert rows[1]["method"] == "esol" and rows[2]["recall_at_t0"] == 0.70
    bad = tmp_path / "bad.csv"
    bad.write_text(csv.read_text().replace("0.001,esol_alpha0.001", "0,esol_alpha0"))
    with pytest.raises(ValueError, match="log axis"):
        plot_sweep(bad, tmp_path / "bad.png", "expansion.alpha", log_x=True)
    assert read_sweep_table(csv)[0]["miou"] == 0.40


# -- the DAG: Snakemake dry runs --------------------------------------------------------


def _config(methods: dict, sweeps: dict | None = None) -> dict:
    cfg = copy.deepcopy(load_config())
    cfg["device"] = "cpu"
    cfg["methods"] = methods
    if sweeps:
        cfg["sweeps"] = sweeps
    cfg["refine"]["methods"] = []
    cfg["segmentation"]["methods"] = []
    cfg["segmentation"]["supervised"] = False
    return cfg


def dry_run(work: Path, cfg: dict, *targets: str) -> tuple[dict[str, int], list[str], str]:
    """(job count per rule, every planned output path, stderr) of ``snakemake -n``."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(work),
                          "-n", *targets, "--configfile", str(work / "config.yaml")],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return {}, [], out.stderr + out.stdout
    counts: dict[str, int] = {}
    outputs: list[str] = []
    for line in out.stdout.splitlines():
        s = line.strip()
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            name = line.split()[1].rstrip(":")
            counts[name] = counts.get(name, 0) + 1
        elif s.startswith("output:"):
            outputs += [p.strip() for p in s.split(":", 1)[1].split(",")]
        elif s.startswith("input:") and "models/expansion" in s:
            outputs += [f"<- {p.strip()}" for p in s.split(":", 1)[1].split(",")]
    return counts, outputs, out.stderr


@pytest.mark.slow
def test_alpha_sweep_plans_two_expansions_on_one_classifier(tmp_path):
    cfg = _config({"cam": CAM, "esol": ESOL},
                  {"alpha": {"base": "esol", "key": "expansion.alpha", "values": [0.003, 0.03],
                             "log": True}})
    counts, outputs, err = dry_run(tmp_path, cfg, "results/synthetic/sweeps/alpha.png")
    assert counts, err[-3000:]
    assert counts["train_classifier"] == 1
    assert counts["train_expansion"] == 2
    assert counts["train_shrinkage"] == 2
    models = {Path(p).name for p in outputs if p.endswith(".pt") and not p.startswith("<-")}
    assert {"expansion_clip-alpha0.003.pt", "expansion_clip-alpha0.03.pt",
            "shrinkage_esol_alpha0.003.pt", "shrinkage_esol_alpha0.03.pt"} <= models
    assert counts["sweep_figure"] == 1
    # The whole DAG (default target) adds esol's own Expansion, and still one classifier.
    counts, _, err = dry_run(tmp_path / "all", cfg)
    assert counts["train_classifier"] == 1 and counts["train_expansion"] == 3, err[-3000:]


@pytest.mark.slow
def test_shrinkage_override_reuses_the_expansion_model(tmp_path):
    methods = {"cam": CAM, "esol": ESOL, "esol_mu01": {**ESOL, "overrides": {"shrinkage.mu": 0.1}}}
    counts, outputs, err = dry_run(tmp_path, _config(methods))
    assert counts, err[-3000:]
    assert counts["train_expansion"] == 1 and counts["train_shrinkage"] == 2
    # Both Shrinkage jobs read the one Expansion checkpoint.
    inputs = [p for p in outputs if p.startswith("<-") and p.endswith(".pt")]
    assert len(inputs) == 2 and {Path(p).name for p in inputs} == {"expansion_clip.pt"}


@pytest.mark.slow
def test_override_of_a_missing_key_is_a_config_error_naming_it(tmp_path):
    methods = {"cam": CAM, "esol": ESOL, "esol_x": {**ESOL, "overrides": {"expansion.alfa": 0.1}}}
    counts, _, err = dry_run(tmp_path, _config(methods))
    assert not counts
    assert "methods.esol_x.overrides.expansion.alfa" in err


# -- Table 6: the paper's number beside ours ---------------------------------------------


def test_table6_paper_column_by_switches():
    import numpy as np

    from esol.report import seed_table, table_markdown

    methods = {"cam": CAM, "esol_no_dts": {**ESOL, "shrinkage_offsets": False},
               "esol": ESOL, "esol_mu01": {**ESOL, "overrides": {"shrinkage.mu": 0.1}}}
    summaries = {m: {"miou": 0.5, "threshold": 0.3, "precision": 0.6, "recall": 0.7} for m in methods}
    curves = {m: {k: np.array([0.3]) for k in ("threshold", "miou", "precision", "recall")}
              for m in methods}
    rows = seed_table(methods, summaries, curves, paper=True)
    # Baseline 48.4, w/o DT_s 50.9, full 53.6; a variant with overrides has no paper row.
    assert [r["paper"] for r in rows] == [48.4, 50.9, 53.6, None]
    md = table_markdown(rows, "train", 10)
    assert "| seed mIoU, oracle t (%) | paper (%) |" in md and "| 50.0 | 50.9 |" in md
    assert "paper" not in seed_table(methods, summaries, curves)[0]


# -- AdvCAM as a seed method ---------------------------------------------------------------


@pytest.mark.slow
def test_advcam_method_gets_make_advcam_from_the_classifier(tmp_path):
    adv = {**CAM, "advcam": True}
    cfg = _config({"cam": CAM, "advcam": adv})
    cfg["advcam"] = {"adv_iter": 2, "ad_coeff": 7, "ad_stepsize": 0.08, "score_th": 0.5}
    counts, outputs, err = dry_run(tmp_path, cfg, "results/synthetic/seeds/table6.md")
    assert counts, err[-3000:]
    # One CAM file per method on the seed split and one on the tuning split (preset figures).
    assert counts["make_advcam"] == 2 and counts["make_cam"] == 2
    assert counts["train_classifier"] == 1 and "train_expansion" not in counts
    assert "results/synthetic/cams/advcam/train.h5" in outputs
    # AdvCAM with an ESOL switch on is refused, naming the method.
    cfg["methods"]["advcam"] = {**adv, "clipping": True}
    counts, _, err = dry_run(tmp_path / "bad", cfg)
    assert not counts and "methods.advcam: advcam runs on the classifier alone" in err


# -- the report shows Table 5 and Figure 6 when the run has them ------------------------


def test_report_sections_for_table5_and_figure6(tmp_path):
    from esol.run_report import sweeps_section, table5_section

    assert table5_section(None) == "" and sweeps_section({}, tmp_path) == ""
    t5 = tmp_path / "table5.md"
    t5.write_text("| Method | total |\n|---|---|\n| `esol` | 10 s |\n\nESOL : AdvCAM measured here: 0.50\n")
    text = table5_section(t5)
    assert text.startswith("## Table 5") and "| `esol` | 10 s |" in text and "0.50" in text
    csv = tmp_path / "mu.csv"
    csv.write_text("value,method,miou,threshold,precision,recall,t0,precision_at_t0,recall_at_t0\n"
                   "0.1,esol_mu0.1,0.40,0.30,0.70,0.50,0.30,0.70,0.52\n"
                   "0.5,esol,0.45,0.35,0.65,0.60,0.30,0.62,0.66\n")
    png = tmp_path / "mu.png"
    png.write_bytes(b"\x89PNG fake")
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    text = sweeps_section({"mu": {"png": png, "csv": csv}}, report_dir)
    assert "![Figure 6, sweep mu](fig6_mu.png)" in text
    assert (report_dir / "fig6_mu.png").read_bytes() == png.read_bytes()
    # One table row per swept value: mIoU in %, precision and recall at the baseline's t0.
    assert "| 0.1 | `esol_mu0.1` | 40.0 | 0.30 | 0.30 | 0.700 | 0.520 |" in text
    assert "| 0.5 | `esol` | 45.0 | 0.35 | 0.30 | 0.620 | 0.660 |" in text


@pytest.mark.slow
def test_report_reads_table5_and_the_sweep_panels_when_configured(tmp_path):
    adv = {**CAM, "advcam": True}
    cfg = _config({"cam": CAM, "esol": ESOL, "advcam": adv},
                  {"mu": {"base": "esol", "key": "shrinkage.mu", "values": [0.1, 0.5], "log": True}})
    cfg["advcam"] = {"adv_iter": 2, "ad_coeff": 7, "ad_stepsize": 0.08, "score_th": 0.5}
    counts, outputs, err = dry_run(tmp_path, cfg, "results/synthetic/report/report.md")
    assert counts, err[-3000:]
    assert counts["table5"] == 1 and counts["sweep_figure"] == 1 and counts["report"] == 1
    assert {"results/synthetic/report/table5.html", "results/synthetic/report/fig6.html"} <= set(outputs)
    # Without AdvCAM or sweeps the report neither waits for nor promises them.
    counts, outputs, err = dry_run(tmp_path / "plain", _config({"cam": CAM, "esol": ESOL}),
                                   "results/synthetic/report/report.md")
    assert counts, err[-3000:]
    assert "table5" not in counts and "sweep_figure" not in counts
    assert not any(p.endswith(("table5.html", "fig6.html")) for p in outputs)
