"""Refinement rules around the seeds: seed CRF, IR labels, label-map evaluation, Table 1.

The paper's Table 1 reports, per seed method, the seed's mIoU ("Seed"), the seed after
a dense CRF ("CRF") and the IRN pseudo mask ("Mask"), all on the seed split (VOC
train). Here every column comes from the same CAM file of the method.

**Which threshold the seed CRF uses** (config ``refine.seed_threshold``): by default
``best``, the background score at which the method's seed reached its best mIoU in
``eval_seed`` (read from that JSON). The CRF column then refines exactly the seed the
Seed column reports, so the two columns differ by the CRF alone; a fixed number
instead applies one score to every method (IRN's ``cam_eval_thres`` is 0.15).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from esol import metrics
from esol.cam import CamStore, cam_file_identity
from esol.crf import crf_label, ir_label
from esol.data.voc import DatasetInfo, read_image, read_label, write_label
from esol.engine import file_digest
from esol.evaluate import write_json
from esol.labeldir import LabelDir, parallel_map
from esol.utils import ConfigError, DatasetError, atomic_path, tqdm_kwargs

log = logging.getLogger(__name__)

Config = Mapping[str, Any]


def seed_threshold(refine_cfg: Config, seed_json: str | os.PathLike | None) -> float:
    """The seed CRF's background score: ``refine.seed_threshold`` or the method's best."""
    value = refine_cfg["seed_threshold"]
    if value != "best":
        return float(value)
    if seed_json is None:
        raise ConfigError("refine.seed_threshold is 'best' but no eval_seed result was given")
    try:
        return float(json.loads(Path(seed_json).read_text())["threshold"])
    except (OSError, ValueError, KeyError) as err:
        raise DatasetError(f"cannot read the best seed threshold from {seed_json}: {err}") from None


def calibration_gamma(reference: float | None, seed_json: str | os.PathLike | None) -> float:
    """Exponent that moves a method's best seed threshold ``t`` onto IRN's operating point.

    IRN's thresholds (``conf_fg`` 0.30, ``conf_bg`` 0.05, ``sem_seg_bg_thres`` 0.25) were
    set for CAMs whose best background score is about ``reference`` (its
    ``cam_eval_thres``, 0.15). Maps whose best score is elsewhere (a from-scratch
    classifier's broad CAMs, ESOL's expanded ones) are raised to ``gamma = ln(reference) /
    ln(t)``, so ``t ** gamma == reference``: a monotone per-method rescaling that keeps
    every ranking of pixels and puts each method at the same point of IRN's thresholds.
    ``reference`` None: no calibration (gamma 1), IRN's thresholds on the raw maps.
    """
    if reference is None:
        return 1.0
    t = seed_threshold({"seed_threshold": "best"}, seed_json)
    if not 0.0 < t < 1.0:
        raise DatasetError(f"best seed threshold {t} in {seed_json} is not inside (0, 1): "
                           "cannot calibrate (set irn.calibrate_to: null)")
    return float(np.log(reference) / np.log(t))


def calibrate(cams: np.ndarray, gamma: float) -> np.ndarray:
    """``cams ** gamma`` for max-normalised maps in [0, 1] (see ``calibration_gamma``)."""
    return cams if gamma == 1.0 else np.power(np.clip(cams, 0.0, 1.0), gamma, dtype=np.float32)


# -- per-image work in worker processes ------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(kind: str, dataset_json: str, cam_path: str, out_dir: str,
                 params: dict[str, Any]) -> None:
    """Open the dataset and the CAM file once per worker process."""
    _WORKER.clear()
    _WORKER.update(kind=kind, info=DatasetInfo.from_json(dataset_json), store=CamStore(cam_path),
                   out=Path(out_dir), params=params)


def _label_one(image_id: str) -> str:
    w = _WORKER
    info, params = w["info"], w["params"]
    rec = w["store"][image_id]
    image = read_image(info.layout.image(image_id))
    if rec.high_res.shape[1:] != image.shape[:2]:
        raise DatasetError(f"CAM of {image_id!r} in {w['store'].path} is {rec.high_res.shape[1:]} "
                           f"but its image is {image.shape[:2]}")
    cams = rec.high_res.astype(np.float32)
    if w["kind"] == "crf":
        label = crf_label(image, cams, rec.keys, params["threshold"], params["crf"])
    else:
        label = ir_label(image, calibrate(cams, params["gamma"]), rec.keys, params["conf_fg"],
                         params["conf_bg"], params["crf"])
    write_label(w["out"] / f"{image_id}.png", label)
    return image_id


def _build_dir(kind: str, ids: Sequence[str], dataset_json: str | os.PathLike,
               cam_path: str | os.PathLike, out_dir: str | os.PathLike, params: dict[str, Any],
               threads: int, desc: str) -> None:
    target = LabelDir(out_dir, {"kind": kind, "ids": list(ids), "params": params,
                                "dataset": file_digest(dataset_json),
                                "cams": cam_file_identity(cam_path)})
    todo = target.todo(list(ids))
    args = (kind, str(dataset_json), str(cam_path), str(target.partial), params)
    try:
        for _ in parallel_map(_label_one, todo, threads, desc, initializer=_init_worker,
                              initargs=args):
            pass
    finally:
        if "store" in _WORKER:  # opened in this process when it did the work itself
            _WORKER.pop("store").close()
    target.finish()


def crf_seeds(cfg: Config, dataset_json: str | os.PathLike, cam_path: str | os.PathLike,
              split: str, seed_json: str | os.PathLike | None, out_dir: str | os.PathLike,
              threads: int = 1) -> float:
    """Rule ``crf_seed``: the thresholded seed of every image of ``split`` after the dense
    CRF, as palette PNGs. Returns the threshold used."""
    threshold = seed_threshold(cfg["refine"], seed_json)
    info = DatasetInfo.from_json(dataset_json)
    log.info("seed CRF on %s at background score %.2f, %d processes", split, threshold, threads)
    _build_dir("crf", info.ids(split), dataset_json, cam_path, out_dir,
               {"threshold": threshold, "crf": dict(cfg["refine"]["crf"])}, threads, "seed CRF")
    return threshold


def make_ir_labels(cfg: Config, dataset_json: str | os.PathLike, cam_path: str | os.PathLike,
                   out_dir: str | os.PathLike, threads: int = 1,
                   seed_json: str | os.PathLike | None = None) -> int:
    """Rule ``ir_labels``: IRN's confident-region labels for every training image, on the
    maps calibrated by ``irn.calibrate_to`` (``calibration_gamma``)."""
    labels = cfg["irn"]["labels"]
    if not labels["conf_bg"] < labels["conf_fg"]:
        raise ConfigError(f"irn.labels.conf_bg ({labels['conf_bg']}) must be below irn.labels.conf_fg "
                          f"({labels['conf_fg']})")
    info = DatasetInfo.from_json(dataset_json)
    ids = info.ids(cfg["dataset"]["train_split"])
    gamma = calibration_gamma(cfg["irn"].get("calibrate_to"), seed_json)
    log.info("IR labels: conf_fg %.2f, conf_bg %.2f on CAMs ** %.3f, %d images, %d processes",
             labels["conf_fg"], labels["conf_bg"], gamma, len(ids), threads)
    _build_dir("ir", ids, dataset_json, cam_path, out_dir,
               {"conf_fg": labels["conf_fg"], "conf_bg": labels["conf_bg"], "gamma": gamma,
                "crf": dict(cfg["refine"]["crf"])}, threads, "IR labels")
    return len(ids)


# -- evaluation -------------------------------------------------------------------------

def evaluate_label_dir(label_dir: str | os.PathLike, info: DatasetInfo, split: str) -> dict[str, Any]:
    """mIoU, per-class IoU, precision/recall of the PNGs of ``split``'s images in a folder
    (a superset folder is fine), against the ground truth (255 ignored)."""
    label_dir = Path(label_dir)
    n = info.num_classes + 1
    conf = np.zeros((n, n), np.int64)
    ids = info.ids(split)
    for image_id in tqdm(ids, desc=f"eval {label_dir.name}", unit="img", **tqdm_kwargs()):
        path = label_dir / f"{image_id}.png"
        if not path.is_file():
            raise DatasetError(f"label map {path} is missing (image {image_id!r} of {split})")
        pred = read_label(path)
        gt_path = info.layout.gt_mask(image_id)
        if gt_path is None:
            raise DatasetError(f"no ground-truth mask for {image_id!r} under {info.root}")
        gt = read_label(gt_path)
        if pred.shape != gt.shape:
            raise DatasetError(f"label map {path} is {pred.shape} but its ground truth is {gt.shape}")
        bad = (pred >= n) & (pred != metrics.IGNORE)
        if bad.any():
            raise DatasetError(f"label map {path} holds value {int(pred[bad][0])} outside 0..{n - 1}")
        # An ignored prediction (255) counts as background: a pseudo mask must say something.
        conf += metrics.confusion_matrix(gt, np.where(pred == metrics.IGNORE, 0, pred), n)
    precision, recall = metrics.foreground_precision_recall(conf)
    names = ["background", *info.classes]
    per_class = {c: (None if np.isnan(v) else float(v))
                 for c, v in zip(names, metrics.iou(conf), strict=True)}
    return {"split": split, "images": len(ids), "miou": metrics.mean_iou(conf),
            "precision": precision, "recall": recall, "pixel_accuracy": metrics.pixel_accuracy(conf),
            "per_class_iou": per_class, "confusion": conf.tolist()}


def evaluate_label_dir_to_json(label_dir: str | os.PathLike, dataset_json: str | os.PathLike,
                               split: str, title: str, stage: str, out_json: str | os.PathLike,
                               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Rules ``eval_crf`` / ``eval_mask``: :func:`evaluate_label_dir` as JSON."""
    info = DatasetInfo.from_json(dataset_json)
    summary = {"method": title, "stage": stage, **(extra or {}),
               **evaluate_label_dir(label_dir, info, split)}
    write_json(out_json, summary)
    log.info("%s %s on %s: mIoU %.4f, precision %.4f, recall %.4f", title, stage, split,
             summary["miou"], summary["precision"], summary["recall"])
    return summary


# -- Table 1 ----------------------------------------------------------------------------

def table1_rows(methods: Sequence[str], seeds: Sequence[str | os.PathLike],
                crfs: Sequence[str | os.PathLike], masks: Sequence[str | os.PathLike]) -> list[dict]:
    """One row per method: Seed, CRF and Mask mIoU (and the thresholds they used)."""
    rows = []
    for m, s, c, k in zip(methods, seeds, crfs, masks, strict=True):
        seed, crf, mask = (json.loads(Path(p).read_text()) for p in (s, c, k))
        rows.append({"method": m, "seed_miou": seed["miou"], "crf_miou": crf["miou"],
                     "mask_miou": mask["miou"], "seed_threshold": seed["threshold"],
                     "crf_threshold": crf["threshold"], "mask_bg_threshold": mask["threshold"],
                     "split": seed["split"], "images": seed["images"]})
    return rows


def table1_markdown(rows: Sequence[dict]) -> str:
    split, images = rows[0]["split"], rows[0]["images"]
    lines = [f"Pseudo-mask quality on `{split}` ({images} images), the paper's Table 1: mIoU (%) of "
             "the seed at its best background threshold, the same seed after a dense CRF, and "
             "the IRN pseudo mask (random walk).", "",
             "| Method | Seed | CRF | Mask (IRN) | seed t | mask bg |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['method']}` | {100 * r['seed_miou']:.1f} | {100 * r['crf_miou']:.1f} | "
                     f"{100 * r['mask_miou']:.1f} | {r['seed_threshold']:.2f} | "
                     f"{r['mask_bg_threshold']:.2f} |")
    return "\n".join(lines) + "\n"


def table1_csv(rows: Sequence[dict]) -> str:
    keys = list(rows[0])
    out = [",".join(keys)]
    out += [",".join(f"{r[k]:.6g}" if isinstance(r[k], float) else str(r[k]) for k in keys)
            for r in rows]
    return "\n".join(out) + "\n"


def refine_grid(path: str | os.PathLike, info: DatasetInfo, split: str, methods: Sequence[str],
                cams: Sequence[str | os.PathLike], thresholds: Sequence[float],
                crf_dirs: Sequence[str | os.PathLike], mask_dirs: Sequence[str | os.PathLike],
                n_images: int) -> None:
    """Image | per method: seed, CRF, mask | ground truth, for the first images with objects."""
    from esol.crf import threshold_indices
    from esol.viz import colorize, image_grid

    ids = [i for i in info.ids(split) if info.labels[split][i]][:n_images]
    rows = [[read_image(info.layout.image(i))] for i in ids]
    titles = ["image"]
    for m, cam, t, crf_dir, mask_dir in zip(methods, cams, thresholds, crf_dirs, mask_dirs, strict=True):
        titles += [f"{m} seed", f"{m} CRF", f"{m} mask"]
        with CamStore(cam) as store:
            for row, image_id in zip(rows, ids, strict=True):
                rec = store[image_id]
                lut = np.concatenate([[0], rec.keys]).astype(np.uint8)
                seed = lut[threshold_indices(rec.high_res, t)]
                row += [colorize(seed), colorize(read_label(Path(crf_dir) / f"{image_id}.png")),
                        colorize(read_label(Path(mask_dir) / f"{image_id}.png"))]
    for row, image_id in zip(rows, ids, strict=True):
        row.append(colorize(read_label(info.layout.gt_mask(image_id))))
    image_grid(path, rows, [*titles, "ground truth"], row_titles=ids)


def write_table1(methods: Sequence[str], dataset_json: str | os.PathLike, seeds: Sequence[str],
                 crfs: Sequence[str], masks: Sequence[str], cams: Sequence[str],
                 crf_dirs: Sequence[str], mask_dirs: Sequence[str], grid_images: int,
                 table_md: str | os.PathLike, table_csv: str | os.PathLike,
                 grid_png: str | os.PathLike) -> list[dict]:
    """Rule ``table1``: the table as markdown and CSV, and a figure of seeds/CRF/masks."""
    rows = table1_rows(methods, seeds, crfs, masks)
    with atomic_path(table_md, suffix=".md") as tmp:
        tmp.write_text(table1_markdown(rows))
    with atomic_path(table_csv, suffix=".csv") as tmp:
        tmp.write_text(table1_csv(rows))
    info = DatasetInfo.from_json(dataset_json)
    refine_grid(grid_png, info, rows[0]["split"], methods, cams, [r["seed_threshold"] for r in rows],
                crf_dirs, mask_dirs, grid_images)
    for r in rows:
        log.info("%s: seed %.4f, CRF %.4f, mask %.4f", r["method"], r["seed_miou"], r["crf_miou"],
                 r["mask_miou"])
    return rows
