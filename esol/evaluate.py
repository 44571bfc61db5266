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


# How 255 pixels of a prediction are counted, per kind of prediction (the report and
# every evaluation JSON say which applies; implementations in the field differ).
PREDICTION_255 = {
    "none": "a thresholded seed holds no 255 (argmax over a background score and the maps)",
    "background": "counted as background (a pseudo mask must say something)",
    "rejected": "refused: a prediction holding 255 stops the evaluation",
}
GROUND_TRUTH_255 = "ignored: pixels whose ground truth is 255 enter no count"


def ground_truth_source(info: DatasetInfo, split: str) -> str:
    """Which mask folder the evaluation of ``split`` reads: ``SegmentationClass`` (VOC's
    hand masks with a 255 band), ``SegmentationClassAug`` (SBD's conversion, no band), or
    a count of each when the split mixes them (:meth:`VOCLayout.gt_mask`)."""
    counts: dict[str, int] = {}
    for image_id in info.ids(split):
        path = info.layout.gt_mask(image_id)
        name = "missing" if path is None else path.parent.name
        counts[name] = counts.get(name, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))


def ground_truth_provenance(info: DatasetInfo, split: str, prediction_255: str) -> dict[str, Any]:
    """What ground truth produced a number and how 255 is counted, for the JSON summaries."""
    return {"split": split, "masks": ground_truth_source(info, split),
            "ground_truth_255": GROUND_TRUTH_255,
            "prediction_255": PREDICTION_255[prediction_255]}


def evaluate_seeds(cam_path: str | os.PathLike, info: DatasetInfo, split: str,
                   thresholds: Sequence[float], preset: float | None = None,
                   ) -> tuple[dict[str, Any], list[metrics.SweepRow]]:
    """Sweep the background threshold over a split's CAMs (docs/method.md, "Inference and evaluation").

    Returns the summary at the best threshold (the **oracle** threshold: chosen with
    this split's ground truth; mIoU, per-class IoU, foreground precision and recall) and
    one row per threshold. ``preset``, a threshold fixed before evaluation, adds the
    same figures at it under ``summary["preset"]``.
    """
    sweep = metrics.SeedSweep(info.num_classes, thresholds)
    at_preset = None if preset is None else metrics.SeedSweep(info.num_classes, [preset])
    ids = info.ids(split)
    with CamStore(cam_path) as store:
        for image_id in tqdm(ids, desc="eval seeds", unit="img", **tqdm_kwargs()):
            rec = store[image_id]
            gt = _ground_truth(info, image_id)
            if rec.high_res.shape[1:] != gt.shape:
                raise DatasetError(f"CAM of {image_id!r} in {cam_path} is {rec.high_res.shape[1:]} "
                                   f"but its mask is {gt.shape}")
            sweep.add(gt, rec.high_res, rec.keys)
            if at_preset is not None:
                at_preset.add(gt, rec.high_res, rec.keys)
    confs = sweep.confusions()
    rows = metrics.sweep_rows(confs, sweep.thresholds)
    best = metrics.best_row(rows)
    summary = {"split": split, "images": len(ids), **asdict(rows[best]),
               "threshold_choice": "oracle: best mIoU of the threshold sweep against this "
                                   "split's own ground truth",
               "per_class_iou": _per_class(info, metrics.iou(confs[best])),
               "confusion": confs[best].tolist()}
    if at_preset is not None:
        conf = at_preset.confusions()[0]
        summary["preset"] = {**asdict(metrics.sweep_rows([conf], [preset])[0]),
                             "per_class_iou": _per_class(info, metrics.iou(conf))}
    summary["ground_truth"] = ground_truth_provenance(info, split, prediction_255="none")
    return summary, rows


def _per_class(info: DatasetInfo, values: np.ndarray) -> dict[str, float | None]:
    names = ["background", *info.classes]
    return {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, values, strict=True)}


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def write_sweep_csv(path: str | os.PathLike, rows: Sequence[metrics.SweepRow]) -> None:
    from esol.tables import write_csv

    write_csv(path, [asdict(r) for r in rows])


def read_sweep_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    data = np.genfromtxt(Path(path), delimiter=",", names=True)
    return {name: np.atleast_1d(data[name]) for name in data.dtype.names}


def evaluate_seeds_to_files(cam_path: str | os.PathLike, dataset_json: str | os.PathLike,
                            split: str, thresholds: Mapping[str, float], title: str,
                            json: str | os.PathLike, csv: str | os.PathLike,
                            png: str | os.PathLike,
                            preset: tuple[float, str] | None = None) -> dict[str, Any]:
    """Rule ``eval_seed``: the sweep as JSON (oracle threshold, and the figures at the
    ``preset`` (threshold, how it was chosen) when given), CSV (every threshold), PNG."""
    from esol.viz import plot_sweep

    info = DatasetInfo.from_json(dataset_json)
    grid = metrics.thresholds_from(thresholds["start"], thresholds["stop"], thresholds["step"])
    summary, rows = evaluate_seeds(cam_path, info, split, grid,
                                   preset=None if preset is None else preset[0])
    if preset is not None:
        summary["preset"]["threshold_choice"] = preset[1]
    summary = {"method": title, **summary}
    write_json(json, summary)
    write_sweep_csv(csv, rows)
    plot_sweep(png, rows, title=f"{title} seeds on {split}")
    log.info("%s on %s: oracle threshold %.2f, mIoU %.4f, precision %.4f, recall %.4f", title,
             split, summary["threshold"], summary["miou"], summary["precision"], summary["recall"])
    if preset is not None:
        log.info("%s on %s: preset threshold %.2f (%s), mIoU %.4f", title, split, preset[0], preset[1],
                 summary["preset"]["miou"])
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m esol.evaluate``: mIoU of any folder of label PNGs against a dataset."""
    import argparse

    from esol.data.voc import VOC_CLASSES, prepare_dataset
    from esol.segmentation.evaluate import prediction_confusion, summarize

    ap = argparse.ArgumentParser(
        prog="python -m esol.evaluate",
        description="mIoU of a folder of <id>.png label maps (class indices, palette or grey) "
                    "against a dataset's SegmentationClass masks; 255 in the ground truth is "
                    "ignored, every predicted value counts.")
    ap.add_argument("predictions", help="folder of <id>.png label maps")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a prepared dataset.json (results/<name>/data/dataset.json)")
    src.add_argument("--voc-root", help="a VOC-layout folder (JPEGImages/, SegmentationClass/, ImageSets/)")
    ap.add_argument("--split", required=True, help="split whose ids are evaluated, e.g. val")
    ap.add_argument("--classes", nargs="+", default=None,
                    help="class names of mask values 1..K (default: the 20 VOC classes)")
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.dataset:
        info = DatasetInfo.from_json(args.dataset)
    else:
        info = prepare_dataset(args.voc_root, args.classes or VOC_CLASSES, [args.split])
    if args.split not in info.labels:
        raise SystemExit(f"split {args.split!r} has no masks to evaluate against")
    missing = [i for i in info.ids(args.split) if not (Path(args.predictions) / f"{i}.png").is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} of {len(info.ids(args.split))} predictions missing, first "
                         f"{Path(args.predictions) / (missing[0] + '.png')}")
    result = {"predictions": str(args.predictions), "split": args.split,
              "images": len(info.ids(args.split)),
              "ground_truth": ground_truth_provenance(info, args.split, "rejected"),
              **summarize(prediction_confusion(args.predictions, info, args.split), info.classes)}
    if args.out:
        write_json(args.out, result)
    print(f"mIoU {100 * result['miou']:.2f} on {args.split} ({result['images']} images)")
    for name, v in result["per_class_iou"].items():
        print(f"  {name:>14s} {'-' if v is None else f'{100 * v:.2f}'}")


if __name__ == "__main__":
    main()
