"""Tables and figures that compare methods (the paper's Table 6, Fig. 3d, Fig. 5)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from esol.cam import CamStore
from esol.data.voc import DatasetInfo, read_image, read_label
from esol.evaluate import read_sweep_csv
from esol.tables import markdown, write_csv
from esol.utils import atomic_path

log = logging.getLogger(__name__)

SWITCHES = (("expansion_offsets", "DT_e"), ("clipping", "FL"), ("shrinkage", "Shr."),
            ("shrinkage_offsets", "DT_s"), ("area_loss", "L_area"))

# The paper's Table 6 (seed mIoU %, PASCAL VOC 2012 train), keyed by the switches above in
# their order (DT_e, FL, Shrinkage, DT_s, L_area): row label and number.
PAPER_TABLE6: dict[tuple[bool, ...], tuple[str, float]] = {
    (False, False, False, False, False): ("Baseline", 48.4),
    (True, False, False, False, False): ("Expansion w/o clipping", 48.5),
    (True, True, False, False, False): ("Expansion", 49.1),
    (True, False, True, True, True): ("Expansion + Shrinkage w/o FL", 51.8),
    (True, True, True, False, False): ("Expansion + Shrinkage w/o (DT_s + L_area)", 50.1),
    (True, True, True, False, True): ("Expansion + Shrinkage w/o DT_s", 50.9),
    (True, True, True, True, False): ("Expansion + Shrinkage w/o L_area", 52.8),
    (True, True, True, True, True): ("Expansion + Shrinkage", 53.6),
}


def paper_table6(spec: Mapping[str, Any]) -> float | None:
    """The paper's Table 6 seed mIoU (%) of a method's switches; None for a variant that
    overrides a stage setting (the paper's rows use its defaults), has no row, or is an
    external method (CAMs from other code, every switch off but not the paper's baseline)."""
    if spec.get("overrides") or spec.get("advcam") or spec.get("external"):
        return None
    row = PAPER_TABLE6.get(tuple(bool(spec[k]) for k, _ in SWITCHES))
    return row[1] if row else None


def baseline_method(methods: Mapping[str, Mapping[str, bool]]) -> str | None:
    """The method with every switch off (the paper's "Baseline" row), if any."""
    return next((m for m, s in methods.items() if not any(s.values())), None)


def seed_table(methods: Mapping[str, Mapping[str, bool]], summaries: Mapping[str, dict],
               sweeps: Mapping[str, dict[str, np.ndarray]], paper: bool = False
               ) -> list[dict[str, Any]]:
    """One row per method: switches, seed quality at the oracle threshold (the best against
    the seed split's own ground truth, the paper's convention) and at the preset threshold
    (fixed before evaluation, when the summary has it), and precision/recall at the
    baseline's oracle threshold (so recall and precision compare at one operating point).
    ``paper`` adds the paper's Table 6 number (VOC) as column ``paper``.
    """
    base = baseline_method(methods)
    t0 = summaries[base]["threshold"] if base else None
    rows = []
    for name, spec in methods.items():
        s = summaries[name]
        row: dict[str, Any] = {"method": name, **{label: bool(spec[k]) for k, label in SWITCHES},
                               "miou": s["miou"], "threshold": s["threshold"],
                               "threshold_choice": "oracle",
                               "precision": s["precision"], "recall": s["recall"]}
        if "preset" in s:
            p = s["preset"]
            row.update({"miou_preset": p["miou"], "preset_threshold": p["threshold"],
                        "preset_threshold_choice": p["threshold_choice"],
                        "precision_preset": p["precision"], "recall_preset": p["recall"]})
        if "ground_truth" in s:
            row["ground_truth"] = s["ground_truth"]["masks"]
        if paper:
            row["paper"] = paper_table6(spec)
        if t0 is not None:
            sw = sweeps[name]
            i = int(np.argmin(np.abs(sw["threshold"] - t0)))
            row.update({"t0": float(sw["threshold"][i]), "miou_at_t0": float(sw["miou"][i]),
                        "precision_at_t0": float(sw["precision"][i]),
                        "recall_at_t0": float(sw["recall"][i])})
        rows.append(row)
    return rows


def table_markdown(rows: Sequence[dict[str, Any]], split: str, images: int) -> str:
    has_t0 = "t0" in rows[0]
    has_preset = "miou_preset" in rows[0]
    has_paper = "paper" in rows[0]
    head = ["Method", *(label for _, label in SWITCHES), "seed mIoU, oracle t (%)",
            *(["paper (%)"] if has_paper else []), "oracle t", "precision", "recall"]
    if has_preset:
        head += ["seed mIoU, preset t (%)", "preset t"]
    if has_t0:
        head += [f"precision @ t0={rows[0]['t0']:.2f}", "recall @ t0"]
    gt = f"; ground truth `{rows[0]['ground_truth']}`, 255 pixels ignored" if "ground_truth" in rows[0] else ""
    lines = [f"Seed quality on `{split}` ({images} images{gt}), the paper's Table 6. "
             "**oracle t**: per method, the threshold with the best mIoU against this split's own "
             "ground truth (the paper's convention; chosen with ground truth)."
             + (f" **preset t**: fixed before evaluation, {rows[0]['preset_threshold_choice']}."
                if has_preset else "")
             + (" t0 is the baseline's oracle threshold." if has_t0 else ""), ""]
    cells_rows = []
    for r in rows:
        cells = [f"`{r['method']}`", *("✓" if r[label] else "" for _, label in SWITCHES),
                 f"{100 * r['miou']:.1f}",
                 *([_paper_cell(r["paper"])] if has_paper else []),
                 f"{r['threshold']:.2f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}"]
        if has_preset:
            cells += [f"{100 * r['miou_preset']:.1f}", f"{r['preset_threshold']:.2f}"]
        if has_t0:
            cells += [f"{r['precision_at_t0']:.3f}", f"{r['recall_at_t0']:.3f}"]
        cells_rows.append(cells)
    return "\n".join(lines) + "\n" + markdown(head, cells_rows)


def _paper_cell(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def fig5_grid(path: str | os.PathLike, info: DatasetInfo, split: str,
              cams: Mapping[str, str | os.PathLike], n_images: int) -> None:
    """Input | one localization map per method | ground truth, for the first images."""
    from esol.viz import image_grid, overlay

    stores = {m: CamStore(p) for m, p in cams.items()}
    try:
        ids = [i for i in info.ids(split) if info.labels[split][i]][:n_images]
        rows, notes = [], []
        for image_id in ids:
            image = read_image(info.layout.image(image_id))
            row, note = [image], [None]
            for store in stores.values():
                rec = store[image_id]
                heat = rec.high_res.astype(np.float32).max(0) if len(rec.keys) else np.zeros(image.shape[:2])
                row.append(overlay(image, heat))
                names = ", ".join(info.classes[k - 1] for k in rec.keys)
                note.append(f"CAM: {names}" if len(rec.keys) < 2 else f"max CAM: {names}")
            row.append(read_label(info.layout.gt_mask(image_id)))
            rows.append(row)
            notes.append([*note, None])
    finally:
        for s in stores.values():
            s.close()
    image_grid(path, rows, ["image", *cams, "ground truth"], row_titles=ids, classes=info.classes,
               notes=notes, colorbar="CAM score (each class divided by its max)")


def compare_seeds(methods: Mapping[str, Mapping[str, bool]], figures: Mapping[str, Any],
                  dataset_json: str | os.PathLike, metrics: Sequence[str], sweeps: Sequence[str],
                  cams: Sequence[str], table_md: str | os.PathLike, table_csv: str | os.PathLike,
                  recall_png: str | os.PathLike, grid_png: str | os.PathLike,
                  paper: bool = False) -> list[dict[str, Any]]:
    """Rule ``compare_seeds``; the path lists follow the order of ``methods``. ``paper``
    (a VOC run) puts the paper's Table 6 number beside each row's."""
    from esol.viz import plot_curves

    names = list(methods)
    summaries = {n: json.loads(Path(p).read_text()) for n, p in zip(names, metrics, strict=True)}
    curves = {n: read_sweep_csv(p) for n, p in zip(names, sweeps, strict=True)}
    rows = seed_table(methods, summaries, curves, paper)
    split = summaries[names[0]]["split"]
    with atomic_path(table_md, suffix=".md") as tmp:
        tmp.write_text(table_markdown(rows, split, summaries[names[0]]["images"]))
    write_csv(table_csv, rows)
    base = baseline_method(methods)
    recall_methods = [m for m in figures["recall_methods"] if m in curves] or names
    plot_curves(recall_png, {m: (curves[m]["threshold"], curves[m]["recall"]) for m in recall_methods},
                "background threshold", "foreground recall", f"Foreground recall on {split} (Fig. 3d)",
                marker_x=summaries[base]["threshold"] if base else None)
    info = DatasetInfo.from_json(dataset_json)
    cam_paths = dict(zip(names, cams, strict=True))
    shown = [m for m in figures["fig5_methods"] if m in cam_paths] or names
    fig5_grid(grid_png, info, split, {m: cam_paths[m] for m in shown}, figures["fig5_images"])
    for r in rows:
        log.info("%s: mIoU %.4f at oracle t=%.2f (P %.3f R %.3f)", r["method"], r["miou"],
                 r["threshold"], r["precision"], r["recall"])
    return rows
