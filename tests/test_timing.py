"""Table 5 (esol/timing.py): pseudo-label generation time summed from benchmark files."""

from __future__ import annotations

import pytest

from esol.timing import benchmark_seconds, esol_advcam_ratio, table5_markdown, table5_rows, write_table5

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(root, rel, *seconds):
    path = root / "benchmarks" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(f"{s}\t0:00:00\t800\t3000\t300\t360\t0\t1\t50\t{s}\n"
                                     for s in seconds))
    return str(path)


@pytest.fixture
def chains(tmp_path):
    clf = _bench(tmp_path, "train_classifier.tsv", 100.5)
    return {
        "esol": {"classifier": [clf],
                 "stages": [_bench(tmp_path, "train_expansion/clip.tsv", 40.25),
                            _bench(tmp_path, "train_shrinkage/esol.tsv", 30.0)],
                 "cams": [_bench(tmp_path, "make_cam/esol/train.tsv", 9.5)], "refinement": []},
        "advcam": {"classifier": [clf],
                   "stages": [_bench(tmp_path, "make_advcam/advcam/train.tsv", 300.0)],
                   "cams": [], "refinement": []},
    }


def test_sums_equal_the_benchmark_files_seconds(chains):
    rows = table5_rows(chains, {"esol": "ESOL", "advcam": "AdvCAM"}, {"esol": "train", "advcam": "train"})
    esol, adv = rows
    # 100.5 + (40.25 + 30.0) + 9.5 = 180.25; 100.5 + 300 = 400.5.
    assert (esol["classifier_s"], esol["stages_s"], esol["cams_s"]) == (100.5, 70.25, 9.5)
    assert esol["total_s"] == 180.25 and adv["total_s"] == 400.5
    assert (esol["paper_h"], adv["paper_h"]) == (10.0, 106.0)
    ratio, pair = esol_advcam_ratio(rows)
    assert ratio == pytest.approx(180.25 / 400.5) and "`esol` : `advcam`" in pair
    md = table5_markdown(rows, "CPU")
    assert "| `esol` | 100 s | 70 s | 10 s (train) | — | 180 s | 10 h |" in md
    assert "ESOL : AdvCAM measured here (`esol` : `advcam`): 0.45; paper 10 h : 106 h = 0.09." in md


def test_repeats_are_averaged_and_bad_files_named(tmp_path):
    assert benchmark_seconds(_bench(tmp_path, "x.tsv", 10, 20)) == 15
    with pytest.raises(FileNotFoundError, match="nope.tsv: benchmark file missing"):
        benchmark_seconds(tmp_path / "nope.tsv")
    (tmp_path / "bad.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="bad.tsv: not a Snakemake benchmark file"):
        benchmark_seconds(tmp_path / "bad.tsv")


def test_no_ratio_across_different_chains(chains, tmp_path):
    chains["esol"]["refinement"] = [_bench(tmp_path, "train_irn/esol.tsv", 5)]
    kinds = {"esol": "ESOL", "advcam": "AdvCAM"}
    # Only esol refined: the ratio leaves refinement out (180.25 / 400.5), and says so.
    ratio, pair = esol_advcam_ratio(table5_rows(chains, kinds, {"esol": "train", "advcam": "train"}))
    assert ratio == pytest.approx(180.25 / 400.5) and "before refinement" in pair
    rows = table5_rows(chains, kinds, {"esol": "train_aug", "advcam": "train"})
    assert esol_advcam_ratio(rows)[0] is None
    assert "ESOL : AdvCAM measured: n/a" in table5_markdown(rows, "CPU")
    write_table5(chains, {"esol": "ESOL"}, {"esol": "train", "advcam": "train"}, "CPU",
                 tmp_path / "t5.md", tmp_path / "t5.csv")
    assert (tmp_path / "t5.csv").read_text().splitlines()[0].startswith("method,kind,cam_split")
