"""The run report's tables: Table 3 rows, Table 1 rows, the benchmark time table."""

import pytest

from esol.run_report import read_benchmarks, table1_rows, table1_section, table3_rows, table3_section, times_section


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


def test_table1_has_seed_crf_and_mask_per_method():
    rows = table1_rows({"cam": {"miou": 0.484}, "esol": {"miou": 0.536}},
                       {"cam": {"miou": 0.541}, "esol": {"miou": 0.614}},
                       {"cam": {"miou": 0.663}, "esol": {"miou": 0.687}})
    assert rows[1] == {"method": "esol", "seed": 0.536, "crf": 0.614, "mask": 0.687}
    assert "| `esol` | 53.6 | 61.4 | 68.7 |" in table1_section(rows, "train")


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
