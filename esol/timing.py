"""The paper's Table 5: pseudo-label generation time per method, from benchmark files.

Snakemake writes one TSV per job (``benchmark:``), whose column ``s`` is the job's wall
time in seconds. A method's pseudo labels cost the sum over the jobs of its chain:
the classifier, its own stages (Expansion + Shrinkage for ESOL, the image manipulation
for AdvCAM), CAM extraction and, for refined methods, IRN (ir_labels, train_irn,
pseudo_masks). The workflow names each chain's files (workflow/rules/esol.smk); this
module reads and sums them, beside the paper's hours on one 12 GB GPU (section 4.3.3).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from esol.tables import write_csv
from esol.utils import atomic_path

# The paper's Table 5 (hours, PASCAL VOC 2012, one GPU).
PAPER_TABLE5_HOURS = {"ESOL": 10.0, "RIB": 27.0, "AdvCAM": 106.0}
COMPONENTS = ("classifier", "stages", "cams", "refinement")


def benchmark_seconds(path: str | os.PathLike) -> float:
    """Wall seconds of one job: column ``s`` of its Snakemake benchmark TSV (the mean
    over the rows, one per repeat, as ``--benchmark-repeats`` writes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: benchmark file missing (was the job run by this "
                                "workflow, with its benchmark: directive?)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no column 's')")
    return sum(float(r["s"]) for r in rows) / len(rows)


def chain_seconds(chain: Mapping[str, Sequence[str | os.PathLike]]) -> dict[str, float]:
    """Seconds per component of one method's chain: {component: sum of its files}."""
    return {part: sum(benchmark_seconds(p) for p in files) for part, files in chain.items()}


def table5_rows(chains: Mapping[str, Mapping[str, Sequence[str | os.PathLike]]],
                kinds: Mapping[str, str | None], cam_splits: Mapping[str, str]
                ) -> list[dict[str, Any]]:
    """One row per method: seconds per component, total, and the paper's hours for its
    kind (``ESOL``, ``AdvCAM`` or None)."""
    rows = []
    for method, chain in chains.items():
        secs = chain_seconds(chain)
        kind = kinds.get(method)
        rows.append({"method": method, "kind": kind or "", "cam_split": cam_splits[method],
                     "refined": bool(chain.get("refinement")),
                     **{f"{c}_s": secs.get(c, 0.0) for c in COMPONENTS},
                     "total_s": sum(secs.values()),
                     "paper_h": PAPER_TABLE5_HOURS.get(kind) if kind else None})
    return rows


def esol_advcam_ratio(rows: Sequence[Mapping[str, Any]]) -> tuple[float | None, str]:
    """ESOL's total over AdvCAM's, measured in the same run; None (and why) when there is
    no pair or their CAMs come from different splits, so the times would not compare.

    When only one of the two is refined, the ratio is taken before refinement
    (classifier + stages + CAMs): refinement is the same IRN for any seed method, and the
    table's question is what each method costs to make its seeds.
    """
    esol = next((r for r in rows if r["kind"] == "ESOL"), None)
    adv = next((r for r in rows if r["kind"] == "AdvCAM"), None)
    if esol is None or adv is None:
        return None, "needs an ESOL and an AdvCAM method in the same run"
    if esol["cam_split"] != adv["cam_split"]:
        return None, (f"`{esol['method']}` and `{adv['method']}` have CAMs of different splits "
                      f"({esol['cam_split']}, {adv['cam_split']})")
    pair = f"`{esol['method']}` : `{adv['method']}`"
    if esol["refined"] == adv["refined"]:
        return esol["total_s"] / adv["total_s"], pair
    before = [f"{c}_s" for c in COMPONENTS if c != "refinement"]
    return (sum(esol[k] for k in before) / sum(adv[k] for k in before),
            f"{pair}, before refinement (only one of them is refined)")


def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 3600 else f"{s / 3600:.2f} h"


def table5_markdown(rows: Sequence[Mapping[str, Any]], device: str) -> str:
    ratio, pair = esol_advcam_ratio(rows)
    head = ["Method", "classifier", "ESOL stages / AdvCAM manipulation", "CAM extraction",
            "refinement (IRN)", "total", "paper (one 12 GB GPU, VOC)"]
    lines = ["Pseudo-label generation time, the paper's Table 5: wall time of each job from "
             f"its benchmark file, summed per method; device: {device}. AdvCAM's CAMs come "
             "out of its manipulation, so its CAM extraction is in its stage column.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        paper = f"{r['paper_h']:.0f} h" if r["paper_h"] is not None else ""
        lines.append("| " + " | ".join([
            f"`{r['method']}`", _fmt_s(r["classifier_s"]), _fmt_s(r["stages_s"]),
            _fmt_s(r["cams_s"]) + f" ({r['cam_split']})",
            _fmt_s(r["refinement_s"]) if r["refined"] else "—", _fmt_s(r["total_s"]), paper]) + " |")
    lines.append(f"| RIB (not run here) | | | | | | {PAPER_TABLE5_HOURS['RIB']:.0f} h |")
    lines.append("")
    paper_ratio = PAPER_TABLE5_HOURS["ESOL"] / PAPER_TABLE5_HOURS["AdvCAM"]
    if ratio is None:
        lines.append(f"ESOL : AdvCAM measured: n/a ({pair}); paper {paper_ratio:.2f}.")
    else:
        lines.append(f"ESOL : AdvCAM measured here ({pair}): {ratio:.2f}; paper 10 h : 106 h = "
                     f"{paper_ratio:.2f}.")
    return "\n".join(lines) + "\n"


def write_table5(chains: Mapping[str, Mapping[str, Sequence[str | os.PathLike]]],
                 kinds: Mapping[str, str | None], cam_splits: Mapping[str, str], device: str,
                 table_md: str | os.PathLike, table_csv: str | os.PathLike) -> list[dict[str, Any]]:
    """Rule ``table5``: the table as Markdown and CSV."""
    rows = table5_rows(chains, kinds, cam_splits)
    with atomic_path(table_md, suffix=".md") as tmp:
        tmp.write_text(table5_markdown(rows, device))
    write_csv(table_csv, rows)
    return rows


def describe_device(name: str) -> str:
    """The device a run's jobs used, in words (the config's device, resolved here)."""
    import torch

    from esol.utils import select_device

    dev = select_device(name)
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (CUDA)"
    return f"CPU ({os.cpu_count()} cores on the machine that wrote this table)"
