"""The IRN rules: ``train_irn`` (relation learning from IR labels) and ``pseudo_masks``.

Training follows IRN's ``step/train_irn.py``: images of the training split with their
IR labels (:func:`esol.crf.ir_label`), randomly rescaled, flipped and cropped; the
label reduced to stride 4 (pixels 2, 6, 10, ... of the crop, as IRN's PIL
nearest-neighbour resize by 0.25); relation labels for every pair within
``irn.train.radius``; the boundary branch at the base learning rate and the
displacement branch at ``displacement_lr_mult`` times it, weight decay on both, poly
decay, through the resumable :func:`esol.engine.fit`.

Pseudo masks follow ``step/make_sem_seg_labels.py``: the boundary map of each image
(scale 1 with its mirror, padded to the training crop as IRN's ``EdgeDisplacement``),
the random walk of its stride-4 CAMs, the background score.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from esol.cam import CamStore, cam_file_identity
from esol.data import transforms as T
from esol.data.datasets import EpochSeededDataset
from esol import distributed
from esol.data.voc import IGNORE, DatasetInfo, read_image, read_label, write_label
from esol.engine import file_digest, fit, history_csv, load_checkpoint, save_checkpoint
from esol.integrity import check_finite_map
from esol.irn.losses import irn_loss
from esol.irn.net import IRNArch, IRNet
from esol.irn.paths import pair_index, path_affinity, relation_labels
from esol.irn.random_walk import random_walk, walk_to_label
from esol.labeldir import LabelDir, dir_digest
from esol.learning import check_at_most, checks_config, map_figures
from esol.models.backbones import build_backbone
from esol.refine import calibrate, training_gamma
from esol.shards import WHOLE, Shard, shard_ids
from esol.models.esol_net import ESOLNet
from esol.utils import (ConfigError, DatasetError, amp_dtype, autocast, evaluating,
                        seed_everything, select_device, tqdm_kwargs)

log = logging.getLogger(__name__)

Config = Mapping[str, Any]


def reduce_label(label: np.ndarray) -> np.ndarray:
    """An (H, W) label map at stride 4, as IRN's ``pil_rescale(label, 0.25, 0)``: PIL
    nearest, centre-aligned, so output pixel ``i`` is input pixel ``4 i + 2`` (the centre
    of the stride-4 cell the boundary network predicts), not ``4 i``."""
    return T.rescale(label, 0.25, nearest=True)


class AffinityDataset(EpochSeededDataset):
    """Images with their IR labels, augmented as IRN's ``VOC12AffinityDataset``.

    Per sample: random rescale in ``rescale`` (image bicubic, label nearest), ImageNet
    normalisation, random horizontal flip, a random ``crop`` x ``crop`` window (padding:
    mean colour, label 255), the label reduced to stride 4 by :func:`reduce_label`.
    The RNG is fixed by ``(seed, epoch, index)``, so a resumed run sees the same data.
    """

    def __init__(self, info: DatasetInfo, split: str, label_dir: str | os.PathLike,
                 crop: int, rescale: tuple[float, float], seed: int = 0) -> None:
        if crop % 4:
            raise ConfigError(f"irn.train.crop must be a multiple of 4 (the label stride), got {crop}")
        self.info, self.ids = info, info.ids(split)
        self.label_dir = Path(label_dir)
        self.crop, self.rescale, self.seed = crop, tuple(rescale), seed

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        rng = self.rng(index)
        img = read_image(self.info.layout.image(image_id))
        label = read_label(self.label_dir / f"{image_id}.png")
        if label.shape != img.shape[:2]:
            raise DatasetError(f"IR label {self.label_dir / (image_id + '.png')} is {label.shape} "
                               f"but its image is {img.shape[:2]}")
        img, label = T.random_scale(img, *self.rescale, rng, label=label)
        img, label = T.random_hflip(T.normalize(img), rng, label=label)
        img, label = T.random_crop(img, self.crop, rng, label=label, fill=0.0, label_fill=IGNORE)
        return {"img": torch.from_numpy(T.to_chw(img)),
                "label": torch.from_numpy(reduce_label(label).astype(np.int64)),
                "id": image_id}


def build_irn(cfg: Config, classifier_ckpt: str | os.PathLike | None) -> IRNet:
    """A fresh IRN whose frozen backbone comes from config ``irn.train.backbone``.

    ``model``: ``model.backbone`` as configured (IRN: ImageNet ResNet-50); refused with
    ``pretrained: none``, which would freeze random weights. ``classifier``: the
    backbone ``f`` of the trained classifier (the only trained features a run without
    downloads has).
    """
    source = cfg["irn"]["train"]["backbone"]
    if source == "classifier":
        if classifier_ckpt is None:
            raise ConfigError("irn.train.backbone is 'classifier' but no classifier checkpoint was given")
        net = ESOLNet.from_checkpoint(load_checkpoint(classifier_ckpt))
        arch = IRNArch(depth=net.arch.depth, frozen_bn=net.arch.frozen_bn, backbone=net.arch.backbone)
        return IRNet(arch, backbone=net.backbone)
    b = cfg["model"]["backbone"]
    if b["pretrained"] == "none":
        raise ConfigError(
            "irn.train.backbone is 'model' but model.backbone.pretrained is 'none': IRN freezes "
            "its backbone, so it would keep random weights. Give pretrained weights, or set "
            "irn.train.backbone: classifier to reuse the trained classifier's features.")
    name, depth = b.get("name", "resnet"), b.get("depth", 50)
    backbone = build_backbone(name, depth=depth, pretrained=str(b["pretrained"]),
                              frozen_bn=b["frozen_bn"])
    return IRNet(IRNArch(depth=depth, frozen_bn=b["frozen_bn"], backbone=name), backbone=backbone)


def train_irn(cfg: Config, dataset_json: str | os.PathLike, label_dir: str | os.PathLike,
              classifier_ckpt: str | os.PathLike | None, out_model: str | os.PathLike,
              out_history: str | os.PathLike | None = None) -> list[dict[str, float]]:
    """Rule ``train_irn``: learn boundaries and displacements from IR labels (IRN 3.3)."""
    t = cfg["irn"]["train"]
    seed_everything(cfg["seed"])
    device = distributed.device_for(select_device(cfg["device"]))
    info = DatasetInfo.from_json(dataset_json)
    split = cfg["dataset"]["train_split"]
    dataset = AffinityDataset(info, split, label_dir, t["crop"], t["rescale"], seed=cfg["seed"])
    net = build_irn(cfg, classifier_ckpt).to(device).train()
    edge_params, dp_params = net.branch_parameters()
    optimizer = torch.optim.SGD(
        [{"params": edge_params, "lr": t["lr"]},
         {"params": dp_params, "lr": t["lr"] * t["displacement_lr_mult"]}],
        lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"])
    index = pair_index((t["crop"] // 4, t["crop"] // 4), t["radius"])
    log.info("IRN: %s backbone (%s, frozen), %d images of %s, %d pairs per crop (radius %d), "
             "%d epochs", net.backbone_label, t["backbone"], len(dataset), split, len(index), t["radius"],
             t["epochs"])

    def step(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits, disp = net(batch["img"])
        # The losses in float32 even under autocast: log(1 + 1e-5 - a) is log(0) in bf16.
        aff = path_affinity(torch.sigmoid(logits.float()), index)
        return irn_loss(aff, disp.float(), index, relation_labels(batch["label"], index))

    # What a resume checkpoint must match: config and input content, not just names.
    section = {"irn": t, "model": cfg["model"], "seed": cfg["seed"], "amp": cfg["amp"],
               "dataset": file_digest(dataset_json), "labels": dir_digest(label_dir),
               "classifier": None if classifier_ckpt is None else file_digest(classifier_ckpt)}
    partial = Path(str(out_model) + ".partial")
    history = fit(params_owner=net, optimizer=optimizer, dataset=dataset, step_fn=step,
                  batch_size=t["batch_size"], epochs=t["epochs"], seed=cfg["seed"],
                  resume_path=partial, checkpoint_every=t["checkpoint_every"], config=section,
                  num_workers=t["num_workers"], desc="irn", amp=amp_dtype(cfg["amp"], device))
    boundaries = boundary_figures(net, info, dataset.ids[:8], device, amp_dtype(cfg["amp"], device))
    save_checkpoint(out_model, net.cpu().checkpoint(config=section, history=history))
    partial.unlink(missing_ok=True)
    if out_history is not None:
        history_csv(out_history, history)
    checks = checks_config(cfg)
    if checks["enabled"]:
        check_at_most("irn", boundaries, "uninformative_share",
                      float(checks["max_constant_boundary_share"]),
                      key="checks.max_constant_boundary_share")
    return history


@torch.no_grad()
def boundary_figures(net: IRNet, info: DatasetInfo, ids: list[str], device: torch.device,
                     amp: torch.dtype | None = None) -> dict[str, float]:
    """Shares of empty or constant boundary maps (:func:`esol.learning.map_figures`) of
    ``ids`` in eval mode: a boundary branch that learned nothing gives a constant map,
    and the random walk then floods every CAM over the whole image."""
    with evaluating(net):
        maps = []
        for image_id in ids:
            x = torch.from_numpy(T.to_chw(T.normalize(read_image(info.layout.image(image_id)))))
            with autocast(amp, device):
                maps.append(net.boundary_map(x[None].to(device)).float().cpu().numpy())
    figures = map_figures(maps)
    log.info("IRN check on %d training images: %.0f%% of boundary maps empty, %.0f%% constant",
             len(ids), 100 * figures["empty_share"], 100 * figures["constant_share"])
    return figures


def pseudo_label(net: IRNet, image: np.ndarray, cams: np.ndarray, keys: np.ndarray,
                 walk: Mapping[str, Any], device: torch.device | str = "cpu",
                 amp: torch.dtype | None = None, pad_to: int | None = None) -> np.ndarray:
    """Semantic pseudo label (H, W) of one image from its stride-4 CAMs (n, h, w).

    ``pad_to``: the IRN training crop; the image is padded to it before the boundary
    network, as IRN's ``EdgeDisplacement`` (:meth:`IRNet.boundary_map`). The network
    may run under autocast to ``amp``; the walk is float32.
    """
    device = torch.device(device)
    x = torch.from_numpy(T.to_chw(T.normalize(image)))[None].to(device)
    with autocast(amp, device):
        boundary = net.boundary_map(x, pad_to=pad_to).float()
    check_finite_map(boundary, "IRN boundary map", "irn", "the IRN checkpoint")
    if boundary.shape != cams.shape[1:]:
        raise DatasetError(f"stride-4 CAM of size {cams.shape[1:]} does not match the boundary map "
                           f"{tuple(boundary.shape)} of an image of {image.shape[:2]}")
    walked = random_walk(torch.from_numpy(np.asarray(cams, np.float32)).to(device), boundary,
                         radius=walk["radius"], beta=walk["beta"], exp_times=walk["exp_times"])
    return walk_to_label(walked, keys, image.shape[:2], walk["bg_threshold"])


@torch.no_grad()
def make_pseudo_masks(cfg: Config, dataset_json: str | os.PathLike, irn_ckpt: str | os.PathLike,
                      cam_path: str | os.PathLike, out_dir: str | os.PathLike,
                      threshold_json: str | os.PathLike | None = None, shard: Shard = WHOLE) -> int:
    """Rule ``pseudo_masks``: a palette PNG per image of the training split (IRN 4.1),
    walking the CAMs calibrated by ``irn.calibrate_to`` from the preset threshold
    (``refine.training_gamma``; ``threshold_json`` the method's ``tune_threshold`` JSON).
    ``shard`` ``(k, n)``: only part k of n, into a shard folder (gathered by
    :func:`esol.labeldir.gather_split`)."""
    device = select_device(cfg["device"])
    amp = amp_dtype(cfg["amp"], device)
    walk = cfg["irn"]["random_walk"]
    info = DatasetInfo.from_json(dataset_json)
    ids = info.ids(cfg["dataset"]["train_split"])
    net = IRNet.from_checkpoint(load_checkpoint(irn_ckpt)).to(device).eval()
    gamma, t, how = training_gamma(cfg, info, threshold_json)
    log.info("random walk of CAMs ** %.3f (threshold %.2f %s), background score %.2f", gamma, t, how,
             walk["bg_threshold"])
    target = LabelDir(out_dir, {"irn": file_digest(irn_ckpt), "cams": cam_file_identity(cam_path),
                                "dataset": file_digest(dataset_json), "ids": ids, "walk": walk,
                                "gamma": gamma, "threshold": t, "amp": str(amp)}, shard)
    todo = target.todo(shard_ids(ids, *shard))
    with CamStore(cam_path) as store:
        for image_id in tqdm(todo, desc="pseudo masks", unit="img", **tqdm_kwargs()):
            rec = store[image_id]
            image = read_image(info.layout.image(image_id))
            label = pseudo_label(net, image, calibrate(rec.cam.astype(np.float32), gamma), rec.keys,
                                 walk, device, amp, pad_to=cfg["irn"]["train"]["crop"])
            write_label(target.partial / f"{image_id}.png", label)
    target.finish()
    return len(ids)
