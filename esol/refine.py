"""Refinement rules around the seeds: seed CRF, IR labels, label-map evaluation, Table 1.

The paper's Table 1 reports, per seed method, the seed's mIoU ("Seed"), the seed after
a dense CRF ("CRF") and the pseudo masks of PSA and IRN ("Mask"), all on the seed split
(VOC train). Here every column comes from the same CAM file of the method, with one
"Mask (NAME)" column per refiner of config ``refine.refiners``.

**Two thresholds, kept apart** (docs/method.md, "What ground truth reaches what"):

* the **oracle threshold**: the background score at which the method's seed reached its
  best mIoU against the seed split's own ground truth (``eval_seed``). The paper's
  convention for Table 1 "Seed"/"CRF" and Table 6; every number at it is labelled
  ``oracle`` and nothing that trains ever reads it;
* the **preset threshold** (config ``refine.threshold``), fixed before any evaluation:
  a number from the config, or ``tuned``, the best seed mIoU on ``dataset.tuning_split``
  (rule ``tune_threshold``), a labelled split that shares no image with the split being
  pseudo-labelled nor with the splits being evaluated (:func:`check_tuning_split`). It
  is the only threshold that reaches training: IRN's calibration
  (``irn.calibrate_to``, :func:`training_gamma`), hence the IR labels, the random walk,
  IRN and DeepLab. Evaluation reports every figure at it beside the oracle one.
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
from esol.evaluate import evaluate_seeds, ground_truth_provenance, write_json, write_sweep_csv
from esol.labeldir import LabelDir, parallel_map
from esol.shards import WHOLE, Shard, shard_ids
from esol.utils import ConfigError, DatasetError, atomic_path, tqdm_kwargs

log = logging.getLogger(__name__)

Config = Mapping[str, Any]

TUNED = "tuned"
ORACLE = "oracle"
PRESET = "preset"
ORACLE_CHOICE = "oracle: best mIoU of the threshold sweep against this split's own ground truth"
FIXED_CHOICE = "fixed in config (refine.threshold)"


def single_path(value: Any) -> str | None:
    """A Snakemake input that is one file or none (an input function returning [] or
    [path]) as a path or None."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return None if value in (None, "") else str(value)
    items = list(value)
    if len(items) > 1:
        raise ValueError(f"expected at most one file, got {items}")
    return str(items[0]) if items else None


def _read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read {what} from {path}: {err}") from None


def oracle_threshold(seed_json: str | os.PathLike) -> float:
    """The method's best seed threshold on the seed split (``eval_seed``): evaluation only."""
    data = _read_json(seed_json, "the oracle seed threshold")
    try:
        return float(data["threshold"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{seed_json} holds no 'threshold'") from None


def preset_threshold(refine_cfg: Config, tuned_json: str | os.PathLike | None) -> tuple[float, str]:
    """The threshold fixed before evaluation (config ``refine.threshold``) and how it was chosen.

    A number: itself, ``fixed in config``. ``tuned``: the ``threshold`` of the method's
    ``tune_threshold`` JSON, ``tuned on <split>``.
    """
    value = refine_cfg["threshold"]
    if value != TUNED:
        return float(value), FIXED_CHOICE
    if tuned_json is None:
        raise ConfigError("refine.threshold is 'tuned' but no tune_threshold result was given "
                          "(set dataset.tuning_split, or a number for refine.threshold)")
    data = _read_json(tuned_json, "the tuned threshold")
    try:
        return float(data["threshold"]), str(data["threshold_choice"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{tuned_json} holds no 'threshold' and 'threshold_choice'") from None


def guarded_splits(cfg: Config) -> dict[str, str]:
    """Config key -> split that a tuning split must not share images with."""
    d = cfg["dataset"]
    guarded = {"dataset.train_split": d["train_split"], "dataset.seed_split": d["seed_split"]}
    seg = cfg.get("segmentation") or {}
    if seg.get("eval_split"):
        guarded["segmentation.eval_split"] = seg["eval_split"]
    return guarded


def check_tuning_split(info: DatasetInfo, tuning_split: str, guarded: Mapping[str, str]) -> None:
    """Refuse a tuning split that shares an image with a split it must stay apart from.

    ``guarded`` maps config keys to split names (:func:`guarded_splits`). Thresholds
    chosen on shared images would carry those images' ground truth into their pseudo
    labels or into the numbers reported on them.
    """
    tune = set(info.ids(tuning_split))
    if not tune:
        raise ConfigError(f"dataset.tuning_split {tuning_split!r} has no images")
    for key, split in guarded.items():
        shared = sorted(tune.intersection(info.ids(split)))
        if shared:
            raise ConfigError(
                f"dataset.tuning_split {tuning_split!r} shares {len(shared)} images with {key} "
                f"{split!r} (e.g. {shared[0]!r}); a tuning split must be disjoint from them")


def tune_threshold(cam_path: str | os.PathLike, dataset_json: str | os.PathLike,
                   tuning_split: str, guarded: Mapping[str, str],
                   thresholds: Mapping[str, float], method: str, out_json: str | os.PathLike,
                   out_csv: str | os.PathLike) -> dict[str, Any]:
    """Rule ``tune_threshold``: the method's best seed threshold on the tuning split.

    The same sweep as ``eval_seed`` (:func:`esol.evaluate.evaluate_seeds`) on images
    that are neither pseudo-labelled nor evaluated (checked first). Its result is the
    only ground-truth-derived number the training side of the pipeline reads.
    """
    info = DatasetInfo.from_json(dataset_json)
    check_tuning_split(info, tuning_split, guarded)
    grid = metrics.thresholds_from(thresholds["start"], thresholds["stop"], thresholds["step"])
    summary, rows = evaluate_seeds(cam_path, info, tuning_split, grid)
    result = {"method": method, "threshold": summary["threshold"],
              "threshold_choice": f"tuned on {tuning_split}",
              "tuning_split": tuning_split, "images": summary["images"],
              "tuning_miou": summary["miou"], "disjoint_from": dict(guarded),
              "ground_truth": ground_truth_provenance(info, tuning_split, prediction_255="none")}
    write_json(out_json, result)
    write_sweep_csv(out_csv, rows)
    log.info("%s: threshold %.2f tuned on %s (%d images, seed mIoU %.4f there)", method,
             result["threshold"], tuning_split, result["images"], result["tuning_miou"])
    return result


def calibration_gamma(reference: float | None, threshold: float) -> float:
    """Exponent that moves a method's preset threshold ``t`` onto IRN's operating point.

    IRN's thresholds (``conf_fg`` 0.30, ``conf_bg`` 0.05, ``sem_seg_bg_thres`` 0.25) were
    set for CAMs whose best background score is about ``reference`` (its
    ``cam_eval_thres``, 0.15). Maps whose best score is elsewhere (a from-scratch
    classifier's broad CAMs, ESOL's expanded ones) are raised to ``gamma = ln(reference) /
    ln(t)``, so ``t ** gamma == reference``: a monotone per-method rescaling that keeps
    every ranking of pixels and puts each method at the same point of IRN's thresholds.
    ``t`` is the preset threshold (:func:`preset_threshold`), never the oracle one.
    ``reference`` None: no calibration (gamma 1), IRN's thresholds on the raw maps.
    """
    if reference is None:
        return 1.0
    if not 0.0 < threshold < 1.0:
        raise DatasetError(f"preset threshold {threshold} is not inside (0, 1): cannot calibrate "
                           "(set irn.calibrate_to: null)")
    return float(np.log(reference) / np.log(threshold))


def preset_gamma(threshold_setting: float | str, tuning_split: str | None,
                 guarded: Mapping[str, str], info: DatasetInfo,
                 threshold_json: str | os.PathLike | None,
                 calibrate_to: float | None) -> tuple[float, float, str]:
    """(gamma, preset threshold, how it was chosen) from explicit settings: config
    ``refine.threshold`` (a number or ``tuned``), ``dataset.tuning_split``, the splits it
    must stay apart from (:func:`guarded_splits`), the method's ``tune_threshold`` JSON and
    the refiner's reference threshold ``calibrate_to``.

    With ``tuned`` the tuning split is checked disjoint again (a result tuned under
    another config must not slip through).
    """
    t, how = preset_threshold({"threshold": threshold_setting}, threshold_json)
    if threshold_setting == TUNED:
        if not tuning_split:
            raise ConfigError("refine.threshold is 'tuned' but dataset.tuning_split is null")
        check_tuning_split(info, tuning_split, guarded)
        if how != f"tuned on {tuning_split}":
            raise DatasetError(f"{threshold_json} was {how}, but dataset.tuning_split is "
                               f"{tuning_split!r}")
    return calibration_gamma(calibrate_to, t), t, how


def training_gamma(cfg: Config, info: DatasetInfo, threshold_json: str | os.PathLike | None,
                   calibrate_to: float | None | str = "irn") -> tuple[float, float, str]:
    """:func:`preset_gamma` with its settings read from a whole config (IRN's rules).
    ``calibrate_to``: the refiner's reference threshold (default ``irn.calibrate_to``)."""
    if calibrate_to == "irn":
        calibrate_to = cfg["irn"].get("calibrate_to")
    tuned = cfg["refine"]["threshold"] == TUNED
    return preset_gamma(cfg["refine"]["threshold"], cfg["dataset"].get("tuning_split"),
                        guarded_splits(cfg) if tuned else {}, info, threshold_json, calibrate_to)


def mask_threshold_choice(refiner: str, section: Config) -> tuple[float | None, str]:
    """(background score or None, how it was chosen) of a refiner's pseudo masks, from
    its config section: IRN's fixed ``random_walk.bg_threshold``; PSA's argmax over the
    background-augmented walk (no threshold: ``random_walk.alpha`` sets the background)."""
    r = section.get("calibrate_to")
    maps = ("raw CAMs" if r is None else
            f"CAMs calibrated ({refiner}.calibrate_to {r}) from the preset threshold")
    if refiner == "irn":
        return (float(section["random_walk"]["bg_threshold"]),
                f"fixed in config (irn.random_walk.bg_threshold), on {maps}")
    if refiner == "psa":
        return (None, f"none: argmax with background (1 - max)^{section['random_walk']['alpha']} "
                      f"(psa.random_walk.alpha), on {maps}")
    return None, f"as the {refiner} refiner sets it, on {maps}"


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
               threads: int, desc: str, shard: Shard = WHOLE) -> None:
    """Label the images of ``shard`` of ``ids`` into ``out_dir`` (the whole of ``ids``
    names the inputs, so the shards of one folder share them)."""
    target = LabelDir(out_dir, {"kind": kind, "ids": list(ids), "params": params,
                                "dataset": file_digest(dataset_json),
                                "cams": cam_file_identity(cam_path)}, shard)
    todo = target.todo(shard_ids(ids, *shard))
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
              split: str, choice: str, threshold_json: str | os.PathLike | None,
              out_dir: str | os.PathLike, threads: int = 1, shard: Shard = WHOLE) -> float:
    """Rule ``crf_seed``: the thresholded seed of every image of ``split`` after the dense
    CRF, as palette PNGs, at the ``oracle`` threshold (``threshold_json`` the method's
    ``eval_seed`` JSON) or the ``preset`` one (its ``tune_threshold`` JSON, or None for
    a number in config). Evaluation only: nothing trains on these. ``shard`` ``(k, n)``:
    only part k of n of the split, into a shard folder
    (:func:`esol.labeldir.gather_label_dirs` joins them). Returns the threshold."""
    threshold = crf_threshold(cfg, choice, threshold_json)[0]
    info = DatasetInfo.from_json(dataset_json)
    log.info("seed CRF on %s%s at the %s background score %.2f, %d processes", split,
             "" if shard == WHOLE else f" (shard {shard[0]} of {shard[1]})", choice, threshold,
             threads)
    _build_dir("crf", info.ids(split), dataset_json, cam_path, out_dir,
               {"threshold": threshold, "crf": dict(cfg["refine"]["crf"])}, threads, "seed CRF",
               shard)
    return threshold


def crf_threshold(cfg: Config, choice: str,
                  threshold_json: str | os.PathLike | None) -> tuple[float, str]:
    """(threshold, how it was chosen) of the seed CRF for ``choice`` oracle or preset."""
    if choice == ORACLE:
        if threshold_json is None:
            raise ConfigError("the oracle seed CRF needs the method's eval_seed result")
        return oracle_threshold(threshold_json), ORACLE_CHOICE
    if choice == PRESET:
        return preset_threshold(cfg["refine"], threshold_json)
    raise ConfigError(f"seed CRF threshold choice {choice!r} is neither {ORACLE!r} nor {PRESET!r}")


def make_ir_labels(cfg: Config, dataset_json: str | os.PathLike, cam_path: str | os.PathLike,
                   out_dir: str | os.PathLike, threads: int = 1,
                   threshold_json: str | os.PathLike | None = None, shard: Shard = WHOLE) -> int:
    """Rule ``ir_labels``: IRN's confident-region labels for every training image, on the
    maps calibrated by ``irn.calibrate_to`` from the preset threshold
    (:func:`training_gamma`; ``threshold_json`` is the method's ``tune_threshold`` JSON
    when ``refine.threshold`` is ``tuned``). No ground truth of ``train_split`` is read.
    ``shard`` ``(k, n)``: only part k of n, into a shard folder (gathered by
    :func:`esol.labeldir.gather_split`)."""
    labels = cfg["irn"]["labels"]
    if not labels["conf_bg"] < labels["conf_fg"]:
        raise ConfigError(f"irn.labels.conf_bg ({labels['conf_bg']}) must be below irn.labels.conf_fg "
                          f"({labels['conf_fg']})")
    info = DatasetInfo.from_json(dataset_json)
    ids = info.ids(cfg["dataset"]["train_split"])
    gamma, t, how = training_gamma(cfg, info, threshold_json)
    log.info("IR labels: conf_fg %.2f, conf_bg %.2f on CAMs ** %.3f (threshold %.2f %s), "
             "%d images, %d processes", labels["conf_fg"], labels["conf_bg"], gamma, t, how,
             len(ids), threads)
    _build_dir("ir", ids, dataset_json, cam_path, out_dir,
               {"conf_fg": labels["conf_fg"], "conf_bg": labels["conf_bg"], "gamma": gamma,
                "crf": dict(cfg["refine"]["crf"])}, threads, "IR labels", shard)
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
            "per_class_iou": per_class, "confusion": conf.tolist(),
            "ground_truth": ground_truth_provenance(info, split, prediction_255="background")}


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


def evaluate_mask_dir(mask_dir: str | os.PathLike, dataset_json: str | os.PathLike, split: str,
                      method: str, out_json: str | os.PathLike, refiner: str,
                      section: Config) -> dict[str, Any]:
    """Rule ``eval_mask``: a refiner's pseudo masks against ``split``'s ground truth, with
    how the refiner set their background (:func:`mask_threshold_choice`)."""
    threshold, choice = mask_threshold_choice(refiner, section)
    return evaluate_label_dir_to_json(mask_dir, dataset_json, split, method, "mask", out_json,
                                      extra={"refiner": refiner, "threshold": threshold,
                                             "threshold_choice": choice})


# -- Table 1 ----------------------------------------------------------------------------

def refiner_title(refiner: str) -> str:
    """A refiner's name in tables: ``IRN``, ``PSA``."""
    return refiner.upper()


def table1_rows(methods: Sequence[str], seeds: Sequence[str | os.PathLike],
                crfs: Sequence[str | os.PathLike], crfs_preset: Sequence[str | os.PathLike],
                masks: Mapping[str, Sequence[str | os.PathLike]]) -> list[dict]:
    """One row per method: Seed and CRF mIoU at the oracle and at the preset threshold,
    one Mask mIoU per refiner (``masks``: refiner -> its ``eval_mask`` JSON per method,
    in config ``refine.refiners`` order), the thresholds and how each was chosen, and
    the ground truth used."""
    if not masks:
        raise ConfigError("Table 1 needs at least one refiner (config refine.refiners)")
    rows = []
    for i, (m, s, c, cp) in enumerate(zip(methods, seeds, crfs, crfs_preset, strict=True)):
        seed, crf, crf_p = (_read_json(p, "Table 1's figures") for p in (s, c, cp))
        if "preset" not in seed:
            raise DatasetError(f"{s} has no figures at the preset threshold (rerun eval_seed)")
        row = {"method": m,
               "seed_miou_oracle": seed["miou"], "seed_miou_preset": seed["preset"]["miou"],
               "crf_miou_oracle": crf["miou"], "crf_miou_preset": crf_p["miou"]}
        mask_cols: dict[str, Any] = {}
        for refiner, files in masks.items():
            if len(files) != len(methods):
                raise ValueError(f"{len(files)} {refiner} mask results for {len(methods)} methods")
            mask = _read_json(files[i], f"the {refiner} mask figures")
            row[f"mask_miou_{refiner}"] = mask["miou"]
            mask_cols[f"mask_bg_threshold_{refiner}"] = mask["threshold"]
            mask_cols[f"mask_threshold_choice_{refiner}"] = mask["threshold_choice"]
            mask_cols[f"mask_prediction_255_{refiner}"] = mask["ground_truth"]["prediction_255"]
        rows.append({**row,
                     "oracle_threshold": seed["threshold"],
                     "preset_threshold": seed["preset"]["threshold"],
                     "preset_threshold_choice": seed["preset"]["threshold_choice"],
                     **mask_cols,
                     "split": seed["split"], "images": seed["images"],
                     "ground_truth": seed["ground_truth"]["masks"],
                     "ground_truth_255": seed["ground_truth"]["ground_truth_255"]})
    return rows


def _refiners_of(row: Mapping[str, Any]) -> list[str]:
    return [k[len("mask_miou_"):] for k in row if k.startswith("mask_miou_")]


def table1_markdown(rows: Sequence[dict]) -> str:
    r0 = rows[0]
    refiners = _refiners_of(r0)
    names = " and ".join(f"the {refiner_title(r)} pseudo mask" for r in refiners)
    lines = [f"Pseudo-mask quality on `{r0['split']}` ({r0['images']} images; ground truth "
             f"`{r0['ground_truth']}`, 255 pixels ignored), the paper's Table 1: mIoU (%) of the "
             f"seed, the same seed after a dense CRF, and {names} (random walk).", "",
             "* **oracle t**: the threshold with the best seed mIoU against this split's own ground "
             "truth (the paper's convention; chosen with ground truth, evaluation only).",
             "* **preset t**: fixed before evaluation, "
             f"{r0['preset_threshold_choice']}; the only threshold that reaches training "
             "(it calibrates the maps of the refiners' training labels and random walks)."]
    for r in refiners:
        lines.append(f"* **Mask ({refiner_title(r)})**: {refiner_title(r)} pseudo masks, background "
                     f"score {r0[f'mask_threshold_choice_{r}']}; a 255 pixel in a mask "
                     f"{r0[f'mask_prediction_255_{r}']}. No ground truth of the pseudo-labelled "
                     "images reaches them.")
    bg = [r for r in refiners if any(row[f"mask_bg_threshold_{r}"] is not None for row in rows)]
    head = (["Method", "Seed (oracle t)", "Seed (preset t)", "CRF (oracle t)", "CRF (preset t)"]
            + [f"Mask ({refiner_title(r)})" for r in refiners] + ["oracle t", "preset t"]
            + [f"mask bg ({refiner_title(r)})" for r in bg])
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = ([f"`{row['method']}`"]
                 + [f"{100 * row[k]:.1f}" for k in ("seed_miou_oracle", "seed_miou_preset",
                                                    "crf_miou_oracle", "crf_miou_preset")]
                 + [f"{100 * row[f'mask_miou_{r}']:.1f}" for r in refiners]
                 + [f"{row['oracle_threshold']:.2f}", f"{row['preset_threshold']:.2f}"]
                 + [f"{row[f'mask_bg_threshold_{r}']:.2f}" for r in bg])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table1_csv(rows: Sequence[dict]) -> str:
    keys = list(rows[0])

    def cell(v: Any) -> str:
        text = "" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)
        return f'"{text}"' if "," in text else text

    out = [",".join(keys)]
    out += [",".join(cell(r[k]) for k in keys) for r in rows]
    return "\n".join(out) + "\n"


def refine_grid(path: str | os.PathLike, info: DatasetInfo, split: str, methods: Sequence[str],
                cams: Sequence[str | os.PathLike], thresholds: Sequence[float],
                crf_dirs: Sequence[str | os.PathLike],
                mask_dirs: Mapping[str, Sequence[str | os.PathLike]], n_images: int) -> None:
    """Image | per method: seed, CRF, one mask per refiner | ground truth, for the first
    images with objects."""
    from esol.crf import threshold_indices
    from esol.viz import image_grid, image_miou

    ids = [i for i in info.ids(split) if info.labels[split][i]][:n_images]
    rows = [[read_image(info.layout.image(i))] for i in ids]
    titles = ["image"]
    for k, (m, cam, t, crf_dir) in enumerate(zip(methods, cams, thresholds, crf_dirs, strict=True)):
        titles += [f"{m} seed (oracle t)", f"{m} CRF (oracle t)"]
        titles += [f"{m} mask ({refiner_title(r)})" for r in mask_dirs]
        with CamStore(cam) as store:
            for row, image_id in zip(rows, ids, strict=True):
                rec = store[image_id]
                lut = np.concatenate([[0], rec.keys]).astype(np.uint8)
                seed = lut[threshold_indices(rec.high_res, t)]
                row += [seed, read_label(Path(crf_dir) / f"{image_id}.png")]
                row += [read_label(Path(dirs[k]) / f"{image_id}.png") for dirs in mask_dirs.values()]
    for row, image_id in zip(rows, ids, strict=True):
        row.append(read_label(info.layout.gt_mask(image_id)))
    # label maps (not RGB) so the grid draws a legend of class name to palette colour
    notes = [[None, *(f"mIoU {100 * image_miou(p, row[-1]):.0f}" for p in row[1:-1]), None] for row in rows]
    image_grid(path, rows, [*titles, "ground truth"], row_titles=ids, classes=info.classes, notes=notes)


def write_table1(methods: Sequence[str], dataset_json: str | os.PathLike, seeds: Sequence[str],
                 crfs: Sequence[str], crfs_preset: Sequence[str],
                 masks: Mapping[str, Sequence[str]], cams: Sequence[str], crf_dirs: Sequence[str],
                 mask_dirs: Mapping[str, Sequence[str]], grid_images: int,
                 table_md: str | os.PathLike, table_csv: str | os.PathLike,
                 grid_png: str | os.PathLike) -> list[dict]:
    """Rule ``table1``: the table as markdown and CSV, and a figure of seeds/CRF/masks
    (the seeds and CRF of the figure at the oracle threshold, as the paper shows them).
    ``masks`` / ``mask_dirs``: refiner -> one entry per method."""
    rows = table1_rows(methods, seeds, crfs, crfs_preset, masks)
    with atomic_path(table_md, suffix=".md") as tmp:
        tmp.write_text(table1_markdown(rows))
    with atomic_path(table_csv, suffix=".csv") as tmp:
        tmp.write_text(table1_csv(rows))
    info = DatasetInfo.from_json(dataset_json)
    refine_grid(grid_png, info, rows[0]["split"], methods, cams, [r["oracle_threshold"] for r in rows],
                crf_dirs, mask_dirs, grid_images)
    for r in rows:
        log.info("%s: seed %.4f (oracle) %.4f (preset), CRF %.4f (oracle) %.4f (preset), %s",
                 r["method"], r["seed_miou_oracle"], r["seed_miou_preset"], r["crf_miou_oracle"],
                 r["crf_miou_preset"], ", ".join(f"mask {refiner_title(k)} {r[f'mask_miou_{k}']:.4f}"
                                                 for k in _refiners_of(r)))
    return rows


def split_by_refiner(refiners: Sequence[str], named: Mapping[str, Any], prefix: str
                     ) -> dict[str, list[str]]:
    """``{refiner: list(named[f"{prefix}{refiner}"])}``: a rule's per-refiner inputs, named
    ``masks_irn``, ``masks_psa``, ... (Snakemake inputs are flat), in ``refiners`` order."""
    return {r: [str(p) for p in named[f"{prefix}{r}"]] for r in refiners}


def write_table1_from_inputs(methods: Sequence[str], refiners: Sequence[str],
                             inputs: Mapping[str, Any], grid_images: int,
                             outputs: Mapping[str, str | os.PathLike]) -> list[dict]:
    """Rule ``table1`` from its named inputs (``seeds``, ``crfs``, ``crfs_preset``, ``cams``,
    ``crf_dirs``, and per refiner ``masks_<r>``, ``mask_dirs_<r>``) and outputs
    (``table_md``, ``table_csv``, ``grid_png``): :func:`write_table1`."""
    return write_table1(methods, inputs["dataset"], list(inputs["seeds"]), list(inputs["crfs"]),
                        list(inputs["crfs_preset"]), split_by_refiner(refiners, inputs, "masks_"),
                        list(inputs["cams"]), list(inputs["crf_dirs"]),
                        split_by_refiner(refiners, inputs, "mask_dirs_"), grid_images,
                        outputs["table_md"], outputs["table_csv"], outputs["grid_png"])
