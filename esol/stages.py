"""The training stages of ESOL (docs/method.md, "What each stage trains"), each a function of the config.

Every stage reads the prepared dataset, trains with :func:`esol.engine.fit` (resumable)
and writes one checkpoint holding the weights, the architecture, the config section
that made it and the per-epoch history.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esol.data import transforms as T
from esol.data.datasets import ClassificationDataset
from esol.data.voc import DatasetInfo, read_image
from esol.cam import CamStore, make_cams
from esol.engine import file_digest, fit, history_csv, load_checkpoint, save_checkpoint
from esol.learning import (check_at_least, check_at_most, check_learned, checks_config,
                           classifier_figures, learned_enough, map_figures)
from esol.integrity import advice
from esol.losses import area_loss, classification_loss
from esol.models.deform import offset_magnitude
from esol.models.esol_net import Arch, ESOLNet
from esol import distributed
from esol.utils import (ConfigError, TrainingError, amp_dtype, autocast, evaluating,
                        seed_everything, select_device)

log = logging.getLogger(__name__)

Config = Mapping[str, Any]


def build_classifier(cfg: Config, num_classes: int) -> ESOLNet:
    """A fresh ESOLNet for the classifier stage, from config section ``model``."""
    m = cfg["model"]
    if m["backbone"]["frozen_bn"] and m["backbone"]["pretrained"] == "none":
        raise ConfigError(
            "model.backbone.frozen_bn is true but model.backbone.pretrained is 'none': frozen "
            "BatchNorm keeps identity statistics, so the network would train without "
            "normalisation. Set frozen_bn: false to train from scratch, or give pretrained "
            "weights ('imagenet' or a file path).")
    arch = Arch(num_classes=num_classes, backbone=m["backbone"].get("name", "resnet"),
                depth=m["backbone"].get("depth", 50),
                kernel_size=m["kernel_size"], frozen_bn=m["backbone"]["frozen_bn"],
                frozen_stages=m["backbone"]["frozen_stages"])
    return ESOLNet(arch, pretrained=str(m["backbone"]["pretrained"]))


def classifier_optimizer(net: ESOLNet, section: Mapping[str, Any]) -> torch.optim.SGD:
    """IRN's ``train_cam`` optimiser: the trainable backbone parameters at ``lr``, the new
    layers (``conv_e``, ``conv_s``, ``w``) at ``new_layer_lr_mult`` times it (IRN: 10)."""
    backbone, new = net.classifier_param_groups()
    return torch.optim.SGD(
        [{"params": backbone, "lr": section["lr"]},
         {"params": new, "lr": section["lr"] * section["new_layer_lr_mult"]}],
        lr=section["lr"], momentum=section["momentum"], weight_decay=section["weight_decay"])


def _training_set(cfg: Config, info: DatasetInfo, section: Mapping[str, Any]) -> ClassificationDataset:
    return ClassificationDataset(info, cfg["dataset"]["train_split"], section["resize_long"],
                                 section["crop"], seed=cfg["seed"])


def train_classifier(cfg: Config, dataset_json: str | os.PathLike, out_model: str | os.PathLike,
                     out_history: str | os.PathLike | None = None) -> list[dict[str, float]]:
    """Classifier stage: IRN's ``train_cam`` recipe on ESOLNet (Eq. 1).

    SGD with poly decay; the new layers (``conv_e``, ``conv_s``, ``w``) learn at
    ``new_layer_lr_mult`` times the backbone's rate.
    """
    c = cfg["classifier"]
    seed_everything(cfg["seed"])
    device = distributed.device_for(select_device(cfg["device"]))
    info = DatasetInfo.from_json(dataset_json)
    net = build_classifier(cfg, info.num_classes).to(device).train()
    optimizer = classifier_optimizer(net, c)
    dataset = _training_set(cfg, info, c)
    monitor = ClassifierMonitor(net, info, cfg, dataset)
    epochs = classifier_epochs(c, len(dataset))
    log.info("classifier: %s, %d classes, %d training images, %d epochs (%d steps)",
             net.backbone_label, info.num_classes, len(dataset), epochs,
             epochs * (len(dataset) // c["batch_size"]))

    def step(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits = net(batch["img"])
        monitor.record(logits, batch["label"])
        loss = classification_loss(logits, batch["label"])
        acc = ((logits > 0).float() == batch["label"]).float().mean().item()
        return loss, {"label_accuracy": acc}

    # What a resume checkpoint must match: config and input content, not just names.
    section = {"model": cfg["model"], "classifier": c, "seed": cfg["seed"], "amp": cfg["amp"],
               "dataset": file_digest(dataset_json)}
    history: list[dict[str, float]] = []
    rounds = 1 + int(c.get("extend_rounds", 0))
    for r in range(rounds):  # more rounds only while the learning check fails
        if r:
            optimizer = restarted(optimizer)
        monitor.round = r
        history += fit(params_owner=net, optimizer=optimizer, dataset=dataset, step_fn=step,
                       batch_size=c["batch_size"], epochs=epochs, seed=cfg["seed"] + r,
                       resume_path=_round_partial(out_model, r), checkpoint_every=c["checkpoint_every"],
                       config={**section, "round": r} if r else section,
                       num_workers=c["num_workers"], desc="classifier",
                       amp=amp_dtype(cfg["amp"], device), on_epoch_end=monitor.on_epoch_end,
                       warmup_steps=int(c.get("warmup_steps", 0)))
        learned = monitor.final()
        if not monitor.extend(learned, r, rounds):
            break
    save_checkpoint(out_model, net.checkpoint(stage="classifier", config=section, history=history,
                                              classes=info.classes, learning=learned))
    for r in range(rounds):
        _round_partial(out_model, r).unlink(missing_ok=True)
    if out_history is not None:
        history_csv(out_history, history)
    monitor.check(learned)
    return history


def _round_partial(out_model: str | os.PathLike, r: int) -> Path:
    return Path(f"{out_model}.partial" + (str(r) if r else ""))


def restarted(optimizer: torch.optim.SGD) -> torch.optim.SGD:
    """A fresh SGD over the same parameter groups at their initial learning rates: a warm
    restart (momentum buffers cleared, the poly schedule starts again)."""
    groups = [{**{k: v for k, v in g.items() if k not in ("params", "lr")},
               "params": g["params"], "lr": g.get("initial_lr", g["lr"])} for g in optimizer.param_groups]
    return torch.optim.SGD(groups, **optimizer.defaults)


def classifier_epochs(section: Mapping[str, Any], images: int) -> int:
    """``classifier.epochs``, raised so that training takes at least ``classifier.min_steps``
    optimiser steps: a schedule by steps, not epochs, does not shrink with the dataset."""
    per_epoch = max(1, images // section["batch_size"])
    return max(int(section["epochs"]), math.ceil(int(section.get("min_steps", 0)) / per_epoch))


def holdout_ids(ids: list[str], fraction: float, seed: int) -> list[str]:
    """The ``round(fraction * len(ids))`` images held aside from classifier training
    (config ``classifier.holdout``), drawn by ``seed``, in the order of ``ids``."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"classifier.holdout must be in [0, 1), got {fraction}")
    n = int(round(fraction * len(ids)))
    if n == 0:
        return []
    chosen = set(np.random.default_rng(seed).choice(len(ids), size=n, replace=False).tolist())
    return [i for k, i in enumerate(ids) if k in chosen]


@torch.no_grad()
def score_images(net: torch.nn.Module, info: DatasetInfo, split: str, ids: list[str],
                 device: torch.device, amp: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image-level logits (N, K) of ``net`` in eval mode on whole images at scale 1 (as
    CAM extraction sees them), and the images' labels (N, K). Modes are restored after."""
    with evaluating(net):
        logits = []
        for image_id in ids:
            x = torch.from_numpy(T.to_chw(T.normalize(read_image(info.layout.image(image_id)))))
            with autocast(amp, device):
                logits.append(net(x[None].to(device)).float()[0].cpu().numpy())
    labels = np.stack([info.label_vector(split, i) for i in ids]) if ids else np.zeros((0, info.num_classes))
    return np.asarray(logits, np.float64).reshape(len(ids), -1), labels


class ClassifierMonitor:
    """The classifier's learning figures (:mod:`esol.learning`), per epoch and at the end.

    Per epoch: mAP and per-class AP of the training batches' logits (train mode,
    augmented; free) and, when ``classifier.holdout`` > 0, of the held-aside images in
    eval mode, beside the class-prior and all-absent baselines. The held-aside images
    are removed from ``dataset`` here, so they are never trained on. At the end
    (:meth:`final`): eval-mode figures on the held-aside images, or without any, on up
    to ``checks.eval_images`` training images; :meth:`check` stops the stage when
    their mAP does not beat the prior mAP by ``checks.min_map_gain``.
    """

    def __init__(self, net: ESOLNet, info: DatasetInfo, cfg: Config,
                 dataset: ClassificationDataset) -> None:
        self.net, self.info, self.split = net, info, cfg["dataset"]["train_split"]
        self.checks = checks_config(cfg)
        self.device = select_device(cfg["device"])
        self.amp = amp_dtype(cfg["amp"], self.device)
        self.holdout = holdout_ids(list(dataset.ids), float(cfg["classifier"].get("holdout", 0.0)),
                                   cfg["seed"])
        if self.holdout:
            held = set(self.holdout)
            dataset.ids = [i for i in dataset.ids if i not in held]
            log.info("classifier: %d images of %s held aside for the learning check",
                     len(self.holdout), self.split)
        self.logits: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.round = 0  # classifier.extend_rounds: which training round the epochs belong to

    def record(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.logits.append(logits.detach().float().cpu().numpy())
        self.labels.append(labels.detach().float().cpu().numpy())

    def _figures(self, ids: list[str]) -> dict[str, float]:
        logits, labels = score_images(self.net, self.info, self.split, ids, self.device, self.amp)
        return classifier_figures(logits, labels, self.info.classes)

    def on_epoch_end(self, record: dict[str, float]) -> None:
        record["round"] = self.round
        if self.logits:
            train = classifier_figures(np.concatenate(self.logits), np.concatenate(self.labels),
                                       self.info.classes)
            self.logits, self.labels = [], []
            for k in ("map", "prior_map", "prior_loss", "all_absent_accuracy"):
                record[f"{k}_train"] = train[k]
            record.update({f"ap_train_{k[3:]}": v for k, v in train.items() if k.startswith("ap_")})
        if self.holdout:
            held = self._figures(self.holdout)
            record.update({f"{k}_holdout": v for k, v in held.items() if not k.startswith("ap_")})
            record.update({f"ap_holdout_{k[3:]}": v for k, v in held.items() if k.startswith("ap_")})
        log.info("classifier epoch %d: %s", record["epoch"],
                 ", ".join(f"{k} {v:.3f}" for k, v in record.items()
                           if ("map" in k or "absent" in k or "prior" in k or "_holdout" in k)
                           and not k.startswith("ap_")))

    def final(self) -> dict[str, float]:
        """Eval-mode figures on the held-aside images, else on the first training images."""
        ids = self.holdout or self.info.labelled_ids(self.split)[: int(self.checks["eval_images"])]
        figures = {"images": len(ids), "on": "holdout" if self.holdout else "train (eval mode)",
                   **self._figures(ids)}
        log.info("classifier learning check on %d %s images: mAP %.3f (class prior %.3f), "
                 "loss %.4f (class prior %.4f), label accuracy %.3f (all absent %.3f); AP per "
                 "class: %s", len(ids), figures["on"], figures["map"], figures["prior_map"],
                 figures["loss"], figures["prior_loss"], figures["label_accuracy"],
                 figures["all_absent_accuracy"],
                 ", ".join(f"{k[3:]} {v:.2f}" for k, v in figures.items() if k.startswith("ap_")))
        return figures

    def extend(self, figures: dict[str, float], r: int, rounds: int) -> bool:
        """Whether to train another round: the check fails and ``classifier.extend_rounds``
        allows more (a schedule extended until the classifier learns, issue 14)."""
        if r + 1 >= rounds or learned_enough(figures, float(self.checks["min_map_gain"])):
            return False
        log.warning("classifier: round %d of %d did not learn (mAP %.3f, class prior %.3f, "
                    "checks.min_map_gain %s): training another round with the schedule restarted "
                    "(classifier.extend_rounds)", r + 1, rounds, figures["map"], figures["prior_map"],
                    self.checks["min_map_gain"])
        return True

    def check(self, figures: dict[str, float]) -> None:
        if self.checks["enabled"]:
            check_learned("classifier", {k: v for k, v in figures.items() if k != "on"},
                          float(self.checks["min_map_gain"]))


def load_method_net(spec: Mapping[str, bool], checkpoint: str | os.PathLike,
                    clip_beta: float | None = None) -> ESOLNet:
    """The network whose CAMs a method's seeds are, from its last stage's checkpoint.

    A method with clipping but no trained Expansion (Table 6's "FL" row) is the
    classifier with clipping switched on at inference.
    """
    net = ESOLNet.from_checkpoint(load_checkpoint(checkpoint))
    if spec.get("clipping") and net.arch.clip_beta is None:
        if clip_beta is None:
            raise ValueError("method uses clipping but no clip_beta was given")
        net.arch = replace(net.arch, clip_beta=clip_beta)
    return net.eval()


def extract_cams(cfg: Config, spec: Mapping[str, bool], checkpoint: str | os.PathLike,
                 dataset_json: str | os.PathLike, split: str, out_path: str | os.PathLike,
                 shard: tuple[int, int] = (0, 1), clip_beta: float | None = None) -> int:
    """Rule ``make_cam``: a method's multi-scale CAMs for one split (method.md section 3),
    or for shard ``(k, n)`` of it (:func:`esol.shards.shard_ids`). ``clip_beta``: the
    method's (for a clipping method whose checkpoint does not carry one), else the
    config's ``expansion.clip_beta``."""
    device = select_device(cfg["device"])
    info = DatasetInfo.from_json(dataset_json)
    if clip_beta is None:
        clip_beta = cfg.get("expansion", {}).get("clip_beta")
    net = load_method_net(spec, checkpoint, clip_beta)
    n = make_cams(net, info, split, out_path, cfg["cam"]["scales"], cfg["cam"]["flip"], device,
                  attrs={"checkpoint": str(checkpoint), "arch": json.dumps(asdict(net.arch))},
                  amp=amp_dtype(cfg["amp"], device), shard=tuple(shard))
    check_cam_file(out_path, checks_config(cfg))
    return n


def check_cam_file(path: str | os.PathLike, checks: Mapping[str, Any]) -> dict[str, float]:
    """Share of the present-class CAMs of a CAM file that are empty or constant; stops the
    stage above ``checks.max_empty_cam_share`` (a classifier that predicts nothing)."""
    with CamStore(path) as store:
        figures = map_figures(m for image_id in store.ids() for m in store[image_id].cam)
    log.info("CAM check on %s: %d present-class maps, %.1f%% empty (max 0), %.1f%% constant",
             path, figures["maps"], 100 * figures["empty_share"], 100 * figures["constant_share"])
    if checks["enabled"]:
        check_at_most("cam", figures, "uninformative_share", float(checks["max_empty_cam_share"]),
                      key="checks.max_empty_cam_share")
    return figures


Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


def expansion_objective(alpha: float) -> Objective:
    """``L_exp = -alpha * L_cls`` (Eq. 5), as ``f(logits, class_maps, labels)``."""

    def loss(logits: torch.Tensor, maps: torch.Tensor, labels: torch.Tensor):
        cls = classification_loss(logits, labels)
        return -alpha * cls, {"cls_loss": cls.item()}

    return loss


def shrinkage_objective(gamma: float, mu: float, present_only: bool = True) -> Objective:
    """``L_shr = gamma * L_cls + mu * L_area`` (Eq. 6), as ``f(logits, class_maps, labels)``."""

    def loss(logits: torch.Tensor, maps: torch.Tensor, labels: torch.Tensor):
        cls = classification_loss(logits, labels)
        area = area_loss(maps, labels, present_only=present_only)
        return gamma * cls + mu * area, {"cls_loss": cls.item(), "area_loss": area.item()}

    return loss


def _offset_monitor(sampler: torch.nn.Module, bound: float, desc: str):
    """Stats of the sampler's last offsets, stopping the stage when they exceed ``bound``."""

    def stats() -> dict[str, float]:
        mag = offset_magnitude(sampler.last_offset)
        mean, peak = mag.mean().item(), mag.max().item()
        if not math.isfinite(peak) or peak > bound:
            raise TrainingError(
                f"{desc}: offsets reached {peak:.1f} feature pixels (bound {bound}); the "
                f"sampler has diverged. Lower {advice(desc)}, or raise {desc}.max_offset.")
        return {"offset_mean": mean, "offset_max": peak}

    return stats


def _esol_stage(cfg: Config, net: ESOLNet, params: list[torch.nn.Parameter], section: Mapping[str, Any],
                info: DatasetInfo, loss_fn, sampler: torch.nn.Module | None, desc: str,
                out_model: str | os.PathLike, out_history: str | os.PathLike | None,
                fingerprint_section: Mapping[str, Any]) -> list[dict[str, float]]:
    """Train ``params`` of a frozen network with ``loss_fn(logits, maps, labels)``."""
    device = distributed.device_for(select_device(cfg["device"]))
    net = net.to(device).eval()  # BatchNorm statistics stay fixed; nothing else is stochastic
    monitor = _offset_monitor(sampler, section["max_offset"], desc) if sampler is not None else None

    def step(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        maps = net.class_maps(batch["img"])
        loss, stats = loss_fn(maps.mean(dim=(2, 3)), maps, batch["label"])
        return loss, {**stats, **(monitor() if monitor else {}),
                      "empty_maps": empty_map_share(maps, batch["label"])}

    history: list[dict[str, float]] = []
    if params:
        # IRN's pattern (weight decay on every trained parameter group); on the offset
        # branch it pulls the offsets back toward the regular conv (docs/method.md).
        optimizer = torch.optim.SGD(params, lr=section["lr"], momentum=section["momentum"],
                                    weight_decay=section["weight_decay"])
        history = fit(params_owner=net, optimizer=optimizer,
                      dataset=_training_set(cfg, info, cfg["classifier"]), step_fn=step,
                      batch_size=section["batch_size"], epochs=section["epochs"], seed=cfg["seed"],
                      resume_path=Path(str(out_model) + ".partial"),
                      checkpoint_every=section["checkpoint_every"], config=fingerprint_section,
                      num_workers=cfg["classifier"]["num_workers"], desc=desc,
                      amp=amp_dtype(cfg["amp"], device))
    else:
        log.info("%s: nothing to train in this variant; the checkpoint carries the network on", desc)
    save_checkpoint(out_model, net.cpu().checkpoint(stage=net.arch.stage, config=fingerprint_section,
                                                    history=history, classes=info.classes))
    Path(str(out_model) + ".partial").unlink(missing_ok=True)
    if out_history is not None:
        history_csv(out_history, history)
    check_sampler_stage(desc, history, checks_config(cfg))
    return history


@torch.no_grad()
def empty_map_share(maps: torch.Tensor, labels: torch.Tensor, tol: float = 1e-3) -> float:
    """Share of the present classes' maps (B, K, H, W) whose ReLU is zero everywhere."""
    present = labels > 0.5
    if not present.any():
        return 0.0
    peak = maps.detach().float().relu().amax(dim=(2, 3))
    return (peak[present] <= tol).float().mean().item()


def check_sampler_stage(desc: str, history: list[dict[str, float]],
                        checks: Mapping[str, Any]) -> None:
    """Expansion/Shrinkage after training: offsets that never moved (``offset_max`` of the
    last epoch below ``checks.min_offset``) or maps that collapsed (``empty_maps`` of the
    last epoch above ``checks.max_empty_map_share``)."""
    if not history or not checks["enabled"]:
        return
    last = {k: v for k, v in history[-1].items() if k in ("loss", "offset_max", "offset_mean",
                                                          "empty_maps", "cls_loss", "area_loss")}
    if "offset_max" in last:
        check_at_least(desc, last, "offset_max", float(checks["min_offset"]), key="checks.min_offset")
    check_at_most(desc, last, "empty_maps", float(checks["max_empty_map_share"]),
                  key="checks.max_empty_map_share")


def train_expansion(cfg: Config, spec: Mapping[str, bool], classifier_ckpt: str | os.PathLike,
                    dataset_json: str | os.PathLike, out_model: str | os.PathLike,
                    out_history: str | os.PathLike | None = None,
                    expansion: Mapping[str, Any] | None = None) -> list[dict[str, float]]:
    """Expansion stage (section 3.2): gradient *ascent* on the classification loss.

    ``L_exp = -alpha * L_cls`` (Eq. 5) trains only the offset branch of the expansion
    sampler that replaces ``conv_e``; clipping (Eq. 7) follows it when the method
    clips. Everything else is frozen and the backbone runs under ``no_grad``.
    ``expansion`` is a variant's effective section (``cfg["expansion"]`` by default).
    """
    e = dict(cfg["expansion"] if expansion is None else expansion)
    seed_everything(cfg["seed"])
    info = DatasetInfo.from_json(dataset_json)
    net = ESOLNet.from_checkpoint(load_checkpoint(classifier_ckpt))
    params = net.to_expansion(deformable=spec["expansion_offsets"],
                              clip_beta=e["clip_beta"] if spec["clipping"] else None)
    loss_fn = expansion_objective(e["alpha"])
    section = {"expansion": e, "switches": {k: spec[k] for k in ("expansion_offsets", "clipping")},
               "classifier": file_digest(classifier_ckpt), "seed": cfg["seed"], "amp": cfg["amp"]}
    return _esol_stage(cfg, net, params, e, info, loss_fn,
                       net.conv_e if spec["expansion_offsets"] else None, "expansion",
                       out_model, out_history, section)


def train_shrinkage(cfg: Config, spec: Mapping[str, bool], expansion_ckpt: str | os.PathLike,
                    dataset_json: str | os.PathLike, out_model: str | os.PathLike,
                    out_history: str | os.PathLike | None = None,
                    shrinkage: Mapping[str, Any] | None = None,
                    clip_beta: float | None = None) -> list[dict[str, float]]:
    """Shrinkage stage (section 3.3): ``gamma * L_cls + mu * L_area`` (Eq. 6), minimised.

    Trains only the offset branch of the shrinkage sampler that replaces ``conv_s``
    (or, for the "w/o DT_s" ablation, ``conv_s`` itself); the Expansion network before
    it is frozen, offsets included. ``expansion_ckpt`` may be the classifier's
    checkpoint for variants without expansion offsets. ``shrinkage`` and ``clip_beta``
    are a variant's effective settings (the config's by default).
    """
    s = dict(cfg["shrinkage"] if shrinkage is None else shrinkage)
    seed_everything(cfg["seed"])
    info = DatasetInfo.from_json(dataset_json)
    net = load_method_net({"clipping": spec["clipping"]}, expansion_ckpt,
                          cfg["expansion"]["clip_beta"] if clip_beta is None else clip_beta)
    if net.arch.stage == "classifier":  # no Expansion training in this variant
        net.arch = replace(net.arch, stage="expansion")
    params = net.to_shrinkage(deformable=spec["shrinkage_offsets"])
    loss_fn = shrinkage_objective(s["gamma"], s["mu"] if spec["area_loss"] else 0.0,
                                  present_only=s["area_classes"] == "present")
    section = {"shrinkage": s, "switches": dict(spec), "expansion": file_digest(expansion_ckpt),
               "seed": cfg["seed"], "amp": cfg["amp"]}
    return _esol_stage(cfg, net, params, s, info, loss_fn,
                       net.conv_s if spec["shrinkage_offsets"] else None, "shrinkage",
                       out_model, out_history, section)
