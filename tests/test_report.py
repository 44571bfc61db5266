"""The run report's tables: Table 3 rows, Table 1 rows, the benchmark time table."""

import pytest

import re
from pathlib import Path

from esol.run_report import read_benchmarks, table1_section, table3_rows, table3_section, times_section


def _evaluation(source, raw, crf):
    per_class = {"background": crf, "a": crf}
    return {"source": source, "split": "val", "images": 8,
            "raw": {"miou": raw, "pixel_accuracy": 0.9, "per_class_iou": per_class},
            "crf": {"miou": crf, "pixel_accuracy": 0.95, "per_class_iou": per_class}}


def test_table3_puts_the_supervised_row_first_and_reports_both_columns():
    evals = [_evaluation("esol", 0.5, 0.55), _evaluation("gt", 0.8, 0.82), _evaluation("cam", 0.4, 0.41)]
    rows = table3_rows(evals)
    assert [r["source"] for r in rows] == ["gt", "esol", "cam"]
    assert (rows[1]["miou"], rows[1]["miou_crf"]) == (0.5, 0.55)
    text = table3_section(evals, {"depth": 18, "aspp_rates": [6, 12, 18, 24]})
    assert "| ground truth (fully supervised) | 80.0 | 82.0 |" in text
    assert "| `esol` pseudo masks | 50.0 | 55.0 |" in text
    assert "`esol` 67%" in text  # 55 / 82 of the supervised mIoU


def test_table1_is_embedded_from_the_refinement_files_with_links_that_resolve(tmp_path):
    refine = tmp_path / "results" / "x" / "refine"
    refine.mkdir(parents=True)
    (refine / "table1.md").write_text("| Method | Seed | CRF | Mask (IRN) |\n|---|---|---|---|\n"
                                      "| `esol` | 53.6 | 61.4 | 68.7 |\n")
    (refine / "table1.csv").write_text("method,seed_miou\nesol,0.536\n")
    (refine / "table1_grid.png").write_bytes(b"png")
    report_dir = tmp_path / "results" / "x" / "report"
    report_dir.mkdir()
    text = table1_section({"table_md": refine / "table1.md", "table_csv": refine / "table1.csv",
                           "grid_png": refine / "table1_grid.png"}, report_dir)
    assert "| `esol` | 53.6 | 61.4 | 68.7 |" in text
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert sorted(links) == ["../refine/table1.csv", "../refine/table1_grid.png"]
    assert all((report_dir / link).resolve().is_file() for link in links)


def test_table1_without_refinement_says_so():
    text = table1_section({}, Path("report"))
    assert text.startswith("## Table 1")
    assert "not configured" in text and "|" not in text


def test_benchmarks_are_read_per_rule_and_job(tmp_path):
    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (tmp_path / "train_segmentation").mkdir()
    (tmp_path / "train_segmentation" / "gt.tsv").write_text(head + "61.5\t0:01:01\t812.3\t1\t1\t1\t0\t0\t180\t110.2\n")
    (tmp_path / "prepare_data.tsv").write_text(head + "2.0\t0:00:02\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n")
    (tmp_path / "report.tsv").write_text(head + "1.0\t0:00:01\t1\t1\t1\t1\t0\t0\t1\t1\n")
    rows = read_benchmarks(tmp_path)
    assert [(r.rule, r.job) for r in rows] == [("prepare_data", ""), ("train_segmentation", "gt")]
    assert rows[1].seconds == 61.5 and rows[1].max_rss_mb == pytest.approx(812.3)
    assert rows[0].cpu_seconds is None
    text = times_section(rows)
    assert "| `train_segmentation` | gt | 0:01:02 | 61.5 | 110.2 | 812 |" in text
    assert "**63.5**" in text


def test_table3_rows_carry_the_ground_truth_and_255_rules():
    e = _evaluation("esol", 0.5, 0.55)
    e["ground_truth"] = {"split": "val", "masks": "SegmentationClass", "ground_truth_255": "ignored",
                         "prediction_255": "refused"}
    e["threshold_choice"] = "none: argmax"
    row = table3_rows([e])[0]
    assert (row["ground_truth"], row["prediction_255"], row["threshold_choice"]) == \
        ("SegmentationClass", "refused", "none: argmax")
    text = table3_section([e], {"depth": 18, "aspp_rates": [6]})
    assert "against `val`'s SegmentationClass masks (255 pixels ignored" in text


def _seed_summary(method, miou, t, preset_miou, preset_t):
    return {"method": method, "split": "train", "images": 4, "miou": miou, "threshold": t,
            "precision": 0.5, "recall": 0.5,
            "ground_truth": {"split": "train", "masks": "SegmentationClass"},
            "preset": {"miou": preset_miou, "threshold": preset_t, "precision": 0.4, "recall": 0.4,
                       "threshold_choice": "tuned on tune"}}


def test_table6_labels_the_oracle_and_the_preset_threshold():
    import numpy as np

    from esol.report import seed_table, table_markdown

    methods = {"cam": dict.fromkeys(("expansion_offsets", "clipping", "shrinkage",
                                     "shrinkage_offsets", "area_loss"), False)}
    sweep = {"threshold": np.array([0.2, 0.3]), "miou": np.array([0.5, 0.4]),
             "precision": np.array([0.5, 0.6]), "recall": np.array([0.5, 0.4])}
    rows = seed_table(methods, {"cam": _seed_summary("cam", 0.5, 0.2, 0.4, 0.3)}, {"cam": sweep})
    assert rows[0]["threshold_choice"] == "oracle" and rows[0]["miou_preset"] == 0.4
    md = table_markdown(rows, "train", 4)
    assert "seed mIoU, oracle t (%) | oracle t |" in md and "seed mIoU, preset t (%) | preset t" in md
    assert "chosen with ground truth" in md and "tuned on tune" in md
    assert "ground truth `SegmentationClass`, 255 pixels ignored" in md
    assert "| `cam` |  |  |  |  |  | 50.0 | 0.20 | 0.500 | 0.500 | 40.0 | 0.30 |" in md


def test_provenance_names_ground_truth_threshold_and_255_for_every_number(tiny_voc):
    from esol.data.voc import prepare_dataset
    from esol.run_report import provenance_rows, provenance_section

    info = prepare_dataset(tiny_voc, ["a", "b", "c"], ["train_aug", "train", "val"])
    config = {"dataset": {"seed_split": "train", "train_split": "train_aug", "tuning_split": None},
              "segmentation": {"eval_split": "val"}, "refine": {"threshold": 0.15}}
    rows = provenance_rows(config, info, {})
    text = provenance_section(rows)
    assert "| Table 3 mIoU, every row | `val`, SegmentationClass |" in text
    assert "| Table 1 Seed and CRF (oracle t); Table 6 seed mIoU (oracle t) | `train`, SegmentationClass " \
           "| oracle: the best of the sweep against `train`'s own masks |" in text
    assert "preset: fixed in config (refine.threshold)" in text
    assert "counted as background" in text and "refused" in text
    assert "Preset threshold (rule tune_threshold)" not in text  # no tuning split
    assert all(r["ground_truth"] and r["threshold"] and r["prediction_255"] for r in rows)
