"""Rule ``predict_segmentation``: multi-scale + flip inference, dense CRF, palette PNGs.

For each image, the network runs at every scale of ``segmentation.predict.scales``
(and on the mirror image when ``flip``); each output's logits are resized to the
image, turned into softmax probabilities (mirrors flipped back) and averaged. The
argmax is the prediction *without* CRF; the same probabilities go through the dense
CRF (:func:`esol.crf.crf_argmax`, deeplab-pytorch's parameters) for the prediction
*with* CRF. CRF runs in ``threads`` worker processes while the network goes on.

Both folders are written under ``<folder>.partial`` (:class:`esol.labeldir.LabelDir`)
and renamed when every image is done; a rerun after an interruption skips the images
already written when they were made from the same weights, dataset and params (else the
partial folders are discarded). Probabilities are checked for NaN/inf before any PNG.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from esol.data import transforms as T
from esol.data.voc import DatasetInfo, read_image, read_label, write_label
from esol.engine import file_digest, load_checkpoint, weights_digest
from esol.integrity import check_finite_map
from esol.labeldir import LabelDir, gather_label_dirs
from esol.learning import check_at_least, checks_config, prediction_figures
from esol.models.deeplab import DeepLabV2
from esol.crf import crf_argmax
from esol.shards import WHOLE, Shard, shard_ids
from esol.utils import DatasetError, amp_dtype, autocast, select_device, tqdm_kwargs

log = logging.getLogger(__name__)


@torch.no_grad()
def multiscale_probs(net: torch.nn.Module, image: np.ndarray, scales: Sequence[float], flip: bool,
                     device: torch.device | str = "cpu", amp: torch.dtype | None = None) -> torch.Tensor:
    """Class probabilities (K+1, H, W) of an RGB uint8 image, averaged over scales and flips.

    ``net(x)`` must return logits at the size of ``x``, as :class:`DeepLabV2` does. The
    network may run under autocast to ``amp``; resizing, softmax and sums are float32.
    """
    device = torch.device(device)
    size = image.shape[:2]
    total, count = None, 0
    for scale in scales:
        x = torch.from_numpy(T.to_chw(T.normalize(T.rescale(image, scale))))[None].to(device)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        with autocast(amp, device):
            out = net(x)
        logits = F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
        probs = logits.softmax(1)
        if flip:
            probs = torch.stack([probs[0], probs[1].flip(-1)])
        s = probs.sum(0)
        total = s if total is None else total + s
        count += probs.shape[0]
    return total / count


def _crf_job(image_path: str, probs: np.ndarray, params: Mapping[str, Any], out: str) -> None:
    write_label(out, crf_argmax(read_image(image_path), probs, params))


def prediction_inputs(net: torch.nn.Module, info: DatasetInfo, split: str, scales: Sequence[float],
                      flip: bool, crf_params: Mapping[str, float], amp: torch.dtype | None,
                      dataset_digest: str | None = None) -> dict[str, Any]:
    """What the predictions of a split depend on (their partial folders' resume fingerprint)."""
    return {"weights": weights_digest(net), "dataset": dataset_digest, "root": str(info.root),
            "manifest": info.manifest, "split": split, "ids": info.ids(split),
            "scales": [float(s) for s in scales], "flip": bool(flip), "crf": dict(crf_params),
            "amp": str(amp)}


def predict_split(net: torch.nn.Module, info: DatasetInfo, split: str, raw_dir: str | os.PathLike,
                  crf_dir: str | os.PathLike, scales: Sequence[float], flip: bool,
                  crf_params: Mapping[str, Any], device: torch.device, workers: int = 1,
                  amp: torch.dtype | None = None, dataset_digest: str | None = None,
                  shard: Shard = WHOLE) -> int:
    """Write ``<id>.png`` predictions of ``split`` without (``raw_dir``) and with CRF.

    ``dataset_digest`` identifies the prepared dataset in the resume fingerprint (the
    image files' manifest is part of ``info`` already). ``shard`` ``(k, n)``: only part k
    of n of the split, into shard folders (:func:`gather_predictions` joins them).
    """
    ids = shard_ids(info.ids(split), *shard)
    net = net.to(device).eval()
    inputs = prediction_inputs(net, info, split, scales, flip, crf_params, amp, dataset_digest)
    raw_out, crf_out = LabelDir(raw_dir, inputs, shard), LabelDir(crf_dir, inputs, shard)
    raw_tmp, crf_tmp = raw_out.partial, crf_out.partial
    todo = set(raw_out.todo(ids)) | set(crf_out.todo(ids))
    done = set(ids) - todo
    if done:
        log.info("resuming prediction: %d of %d images already done", len(done), len(ids))
    stage = "deeplab"
    pool = (ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
            if workers > 1 else None)
    pending: deque[Future] = deque()
    try:
        bar = tqdm(total=len(ids), initial=len(done), desc=f"predict {split}", unit="img",
                   **tqdm_kwargs())
        for image_id in ids:
            if image_id in done:
                continue
            image_path = info.layout.image(image_id)
            image = read_image(image_path)
            probs = multiscale_probs(net, image, scales, flip, device, amp).cpu().numpy()
            check_finite_map(probs, f"prediction of image {image_id!r}", stage,
                             "the DeepLab checkpoint")
            write_label(raw_tmp / f"{image_id}.png", probs.argmax(0).astype(np.uint8))
            job = (str(image_path), probs, dict(crf_params), str(crf_tmp / f"{image_id}.png"))
            if pool is None:
                _crf_job(*job)
                bar.update()
                continue
            pending.append(pool.submit(_crf_job, *job))
            while len(pending) > 2 * workers or (pending and pending[0].done()):
                pending.popleft().result()
                bar.update()
        while pending:
            pending.popleft().result()
            bar.update()
        bar.close()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    raw_out.finish()
    crf_out.finish()
    return len(ids)


def predict_segmentation(cfg: Mapping[str, Any], checkpoint: str | os.PathLike,
                         dataset_json: str | os.PathLike, split: str, raw_dir: str | os.PathLike,
                         crf_dir: str | os.PathLike, workers: int = 1,
                         shard: Shard = WHOLE) -> int:
    """Rule ``predict_segmentation``: a trained DeepLab on one split (with or without
    masks), or on part ``shard`` ``(k, n)`` of it; the check on the predicted classes
    then waits for the whole split (:func:`gather_predictions`)."""
    p = cfg["segmentation"]["predict"]
    device = select_device(cfg["device"])
    info = DatasetInfo.from_json(dataset_json)
    net = DeepLabV2.from_checkpoint(load_checkpoint(checkpoint))
    if net.arch.num_classes != info.num_classes + 1:
        raise DatasetError(f"{checkpoint} predicts {net.arch.num_classes - 1} classes but the dataset "
                           f"has {info.num_classes}")
    log.info("predicting %s (%d images%s) at scales %s%s, CRF %s, %d CRF workers", split,
             len(shard_ids(info.ids(split), *shard)),
             "" if shard == WHOLE else f", shard {shard[0]} of {shard[1]}", list(p["scales"]),
             " + flip" if p["flip"] else "", dict(p["crf"]), workers)
    n = predict_split(net, info, split, raw_dir, crf_dir, p["scales"], p["flip"], p["crf"],
                      device, workers=workers, amp=amp_dtype(cfg["amp"], device),
                      dataset_digest=file_digest(dataset_json), shard=shard)
    if shard == WHOLE:
        check_predictions(raw_dir, info.ids(split), checks_config(cfg), f"deeplab[{split}]")
    return n


def gather_predictions(cfg: Mapping[str, Any], dataset_json: str | os.PathLike, split: str,
                       raw_shards: Sequence[str | os.PathLike],
                       crf_shards: Sequence[str | os.PathLike], raw_dir: str | os.PathLike,
                       crf_dir: str | os.PathLike) -> int:
    """Rule ``gather_predictions``: the shard folders of ``predict_segmentation`` joined
    into the two folders an unsharded run writes, then its check on the whole split."""
    ids = DatasetInfo.from_json(dataset_json).ids(split)
    n = gather_label_dirs(raw_shards, raw_dir, ids)
    gather_label_dirs(crf_shards, crf_dir, ids)
    log.info("gathered %d predictions of %s from %d shards", n, split, len(raw_shards))
    check_predictions(raw_dir, ids, checks_config(cfg), f"deeplab[{split}]")
    return n


def check_predictions(raw_dir: str | os.PathLike, ids: Sequence[str], checks: Mapping[str, Any],
                      stage: str = "deeplab") -> dict[str, float]:
    """Stop when the predictions (without CRF) of a split hold fewer than
    ``checks.min_predicted_classes`` classes (a DeepLab that predicts one class)."""
    figures = prediction_figures(read_label(Path(raw_dir) / f"{i}.png") for i in ids)
    log.info("%s check: %d classes predicted, the largest on %.1f%% of the pixels", stage,
             figures["classes_predicted"], 100 * figures["top_class_share"])
    if checks["enabled"]:
        check_at_least(stage, figures, "classes_predicted", int(checks["min_predicted_classes"]),
                       key="checks.min_predicted_classes")
    return figures


def write_submission(crf_dir: str | os.PathLike, ids: Sequence[str], split: str,
                     out_dir: str | os.PathLike, comp: str = "comp6") -> Path:
    """Predictions in the VOC evaluation server's layout, ready to tar and upload.

    ``<out_dir>/results/VOC2012/Segmentation/<comp>_<split>_cls/<id>.png`` (palette PNGs
    of class indices). VOC's comp5 admits VOC data only, comp6 any other data (ImageNet
    weights included), hence comp6 by default.
    """
    crf_dir, out_dir = Path(crf_dir), Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    target = tmp / "results" / "VOC2012" / "Segmentation" / f"{comp}_{split}_cls"
    target.mkdir(parents=True)
    try:
        for image_id in ids:
            src = crf_dir / f"{image_id}.png"
            if not src.is_file():
                raise DatasetError(f"prediction {src} is missing")
            shutil.copyfile(src, target / f"{image_id}.png")
    except BaseException:
        shutil.rmtree(tmp)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir / target.relative_to(tmp)


def write_submission_from_dataset(dataset_json: str | os.PathLike, crf_dir: str | os.PathLike,
                                  split: str, out_dir: str | os.PathLike) -> Path:
    """Rule ``segmentation_submission``: every image of ``split``, from the CRF predictions."""
    info = DatasetInfo.from_json(dataset_json)
    folder = write_submission(crf_dir, info.ids(split), split, out_dir)
    log.info("%d predictions of %s in %s; upload `tar -czf results.tgz -C %s results`",
             len(info.ids(split)), split, folder, out_dir)
    return folder
