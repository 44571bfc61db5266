"""The one table writer: CSV files and markdown tables from rows of dicts or cells.

Every CSV and markdown table the pipeline writes (training histories, threshold sweeps,
Tables 1, 3, 5 and 6, the time table) goes through here, so numbers are formatted one
way (floats to 6 significant digits, booleans as 0/1, missing as empty) and files are
written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from esol.utils import atomic_path


def cell(v: Any) -> str:
    """A value as CSV text: floats %.6g (nan as ``nan``), bools 0/1, None empty."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def csv_text(rows: Sequence[Mapping[str, Any]], fields: Sequence[str] | None = None) -> str:
    """CSV of ``rows``; columns are ``fields`` or every key in first-seen order."""
    keys = list(fields) if fields is not None else list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(keys)
    for r in rows:
        writer.writerow([cell(r.get(k)) for k in keys])
    return buf.getvalue()


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]],
              fields: Sequence[str] | None = None) -> None:
    """:func:`csv_text` written atomically to ``path``."""
    text = csv_text(rows, fields)
    with atomic_path(path, suffix=".csv") as tmp:
        tmp.write_text(text)


def markdown(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; cells are used as given (``str()``)."""
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    bad = [i for i, r in enumerate(rows) if len(r) != len(head)]
    if bad:
        raise ValueError(f"markdown table: row {bad[0]} has {len(rows[bad[0]])} cells for "
                         f"{len(head)} columns")
    return "\n".join([line(head), "|" + "---|" * len(head), *map(line, rows)]) + "\n"
