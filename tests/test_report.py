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
