"""The training stages of ESOL (design/method.md section 2), each a function of the config.

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

import torch

from esol.data.datasets import ClassificationDataset
from esol.data.voc import DatasetInfo
from esol.cam import make_cams
from esol.engine import file_digest, fit, history_csv, load_checkpoint, save_checkpoint
from esol.integrity import advice
from esol.losses import area_loss, classification_loss
from esol.models.deform import offset_magnitude
from esol.models.esol_net import Arch, ESOLNet
from esol.utils import ConfigError, TrainingError, amp_dtype, seed_everything, select_device

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
    arch = Arch(num_classes=num_classes, depth=m["backbone"]["depth"],
                kernel_size=m["kernel_size"], frozen_bn=m["backbone"]["frozen_bn"],
                frozen_stages=m["backbone"]["frozen_stages"])
    return ESOLNet(arch, pretrained=str(m["backbone"]["pretrained"]))


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
    device = select_device(cfg["device"])
    info = DatasetInfo.from_json(dataset_json)
    net = build_classifier(cfg, info.num_classes).to(device).train()
    backbone, new = net.classifier_param_groups()
    optimizer = torch.optim.SGD(
        [{"params": backbone, "lr": c["lr"]},
         {"params": new, "lr": c["lr"] * c["new_layer_lr_mult"]}],
        lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"])
    dataset = _training_set(cfg, info, c)
    log.info("classifier: ResNet-%d, %d classes, %d training images, %d epochs",
             net.arch.depth, info.num_classes, len(dataset), c["epochs"])

    def step(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits = net(batch["img"])
        loss = classification_loss(logits, batch["label"])
        acc = ((logits > 0).float() == batch["label"]).float().mean().item()
        return loss, {"label_accuracy": acc}

    # What a resume checkpoint must match: config and input content, not just names.
    section = {"model": cfg["model"], "classifier": c, "seed": cfg["seed"], "amp": cfg["amp"],
               "dataset": file_digest(dataset_json)}
    history = fit(params_owner=net, optimizer=optimizer, dataset=dataset, step_fn=step,
                  batch_size=c["batch_size"], epochs=c["epochs"], seed=cfg["seed"],
                  resume_path=Path(str(out_model) + ".partial"),
                  checkpoint_every=c["checkpoint_every"], config=section,
                  num_workers=c["num_workers"], desc="classifier",
                  amp=amp_dtype(cfg["amp"], device))
    save_checkpoint(out_model, net.checkpoint(stage="classifier", config=section, history=history,
                                              classes=info.classes))
    Path(str(out_model) + ".partial").unlink(missing_ok=True)
    if out_history is not None:
        history_csv(out_history, history)
    return history


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
                 dataset_json: str | os.PathLike, split: str, out_path: str | os.PathLike) -> int:
    """Rule ``make_cam``: a method's multi-scale CAMs for one split (design section 3)."""
    device = select_device(cfg["device"])
    info = DatasetInfo.from_json(dataset_json)
    clip_beta = cfg.get("expansion", {}).get("clip_beta")
    net = load_method_net(spec, checkpoint, clip_beta)
    return make_cams(net, info, split, out_path, cfg["cam"]["scales"], cfg["cam"]["flip"], device,
                     attrs={"checkpoint": str(checkpoint), "arch": json.dumps(asdict(net.arch))},
                     amp=amp_dtype(cfg["amp"], device))


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
    device = select_device(cfg["device"])
    net = net.to(device).eval()  # BatchNorm statistics stay fixed; nothing else is stochastic
    monitor = _offset_monitor(sampler, section["max_offset"], desc) if sampler is not None else None

    def step(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        maps = net.class_maps(batch["img"])
        loss, stats = loss_fn(maps.mean(dim=(2, 3)), maps, batch["label"])
        return loss, {**stats, **(monitor() if monitor else {})}

    history: list[dict[str, float]] = []
    if params:
        optimizer = torch.optim.SGD(params, lr=section["lr"], momentum=section["momentum"])
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
    return history


def train_expansion(cfg: Config, spec: Mapping[str, bool], classifier_ckpt: str | os.PathLike,
                    dataset_json: str | os.PathLike, out_model: str | os.PathLike,
                    out_history: str | os.PathLike | None = None) -> list[dict[str, float]]:
    """Expansion stage (section 3.2): gradient *ascent* on the classification loss.

    ``L_exp = -alpha * L_cls`` (Eq. 5) trains only the offset branch of the expansion
    sampler that replaces ``conv_e``; clipping (Eq. 7) follows it when the method
    clips. Everything else is frozen and the backbone runs under ``no_grad``.
    """
    e = cfg["expansion"]
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
                    out_history: str | os.PathLike | None = None) -> list[dict[str, float]]:
    """Shrinkage stage (section 3.3): ``gamma * L_cls + mu * L_area`` (Eq. 6), minimised.

    Trains only the offset branch of the shrinkage sampler that replaces ``conv_s``
    (or, for the "w/o DT_s" ablation, ``conv_s`` itself); the Expansion network before
    it is frozen, offsets included. ``expansion_ckpt`` may be the classifier's
    checkpoint for variants without expansion offsets.
    """
    s = cfg["shrinkage"]
    seed_everything(cfg["seed"])
    info = DatasetInfo.from_json(dataset_json)
    net = load_method_net({"clipping": spec["clipping"]}, expansion_ckpt,
                          cfg["expansion"]["clip_beta"])
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
