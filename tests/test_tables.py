"""The one CSV/markdown table writer (esol/tables.py)."""

import csv

import pytest

from esol.tables import csv_text, markdown, write_csv


def test_csv_formats_every_kind_of_value_one_way(tmp_path):
    rows = [{"method": "cam", "miou": 0.51234567, "ok": True, "t": None},
            {"method": "esol", "miou": float("nan"), "extra": 3}]
    assert csv_text(rows) == ("method,miou,ok,t,extra\n"
                              "cam,0.512346,1,,\n"
                              "esol,nan,,,3\n")
    write_csv(tmp_path / "t.csv", rows, fields=["method", "miou"])
    with open(tmp_path / "t.csv") as f:
        assert list(csv.reader(f)) == [["method", "miou"], ["cam", "0.512346"], ["esol", "nan"]]


def test_csv_quotes_commas():
    assert csv_text([{"a": "x,y"}]) == 'a\n"x,y"\n'


def test_markdown_table_and_a_ragged_row():
    assert markdown(["a", "b"], [[1, "x|y"]]) == "| a | b |\n|---|---|\n| 1 | x\\|y |\n"
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        markdown(["a", "b"], [[1]])
