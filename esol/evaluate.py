"""Evaluation runners: stored predictions against the dataset's ground truth, to files."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from esol import metrics
from esol.cam import CamStore
from esol.data.voc import DatasetInfo, read_label
from esol.utils import DatasetError, atomic_path, tqdm_kwargs

log = logging.getLogger(__name__)


def _ground_truth(info: DatasetInfo, image_id: str) -> np.ndarray:
    path = info.layout.gt_mask(image_id)
    if path is None:
        raise DatasetError(f"no ground-truth mask for {image_id!r} under {info.root}")
    return read_label(path)


def evaluate_seeds(cam_path: str | os.PathLike, info: DatasetInfo, split: str,
                   thresholds: Sequence[float]) -> tuple[dict[str, Any], list[metrics.SweepRow]]:
    """Sweep the background threshold over a split's CAMs (design/method.md section 3).

    Returns the summary at the best threshold (mIoU, per-class IoU, foreground precision
    and recall) and one row per threshold.
    """
    sweep = metrics.SeedSweep(info.num_classes, thresholds)
    ids = info.ids(split)
    with CamStore(cam_path) as store:
        for image_id in tqdm(ids, desc="eval seeds", unit="img", **tqdm_kwargs()):
            rec = store[image_id]
            gt = _ground_truth(info, image_id)
            if rec.high_res.shape[1:] != gt.shape:
                raise DatasetError(f"CAM of {image_id!r} in {cam_path} is {rec.high_res.shape[1:]} "
                                   f"but its mask is {gt.shape}")
            sweep.add(gt, rec.high_res, rec.keys)
    confs = sweep.confusions()
    rows = metrics.sweep_rows(confs, sweep.thresholds)
    best = metrics.best_row(rows)
    summary = {"split": split, "images": len(ids), **asdict(rows[best]),
               "per_class_iou": _per_class(info, metrics.iou(confs[best])),
               "confusion": confs[best].tolist()}
    return summary, rows


def _per_class(info: DatasetInfo, values: np.ndarray) -> dict[str, float | None]:
    names = ["background", *info.classes]
    return {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, values, strict=True)}


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def write_sweep_csv(path: str | os.PathLike, rows: Sequence[metrics.SweepRow]) -> None:
    fields = list(asdict(rows[0]))
    with atomic_path(path, suffix=".csv") as tmp:
        lines = [",".join(fields)]
        lines += [",".join(f"{getattr(r, f):.6g}" for f in fields) for r in rows]
        tmp.write_text("\n".join(lines) + "\n")


def read_sweep_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    data = np.genfromtxt(Path(path), delimiter=",", names=True)
    return {name: np.atleast_1d(data[name]) for name in data.dtype.names}


def evaluate_seeds_to_files(cam_path: str | os.PathLike, dataset_json: str | os.PathLike,
                            split: str, thresholds: Mapping[str, float], title: str,
                            json: str | os.PathLike, csv: str | os.PathLike,
                            png: str | os.PathLike) -> dict[str, Any]:
    """Rule ``eval_seed``: the sweep as JSON (best threshold), CSV (every threshold), PNG."""
    from esol.viz import plot_sweep

    info = DatasetInfo.from_json(dataset_json)
    grid = metrics.thresholds_from(thresholds["start"], thresholds["stop"], thresholds["step"])
    summary, rows = evaluate_seeds(cam_path, info, split, grid)
    summary = {"method": title, **summary}
    write_json(json, summary)
    write_sweep_csv(csv, rows)
    plot_sweep(png, rows, title=f"{title} seeds on {split}")
    log.info("%s on %s: best threshold %.2f, mIoU %.4f, precision %.4f, recall %.4f", title, split,
             summary["threshold"], summary["miou"], summary["precision"], summary["recall"])
    return summary
