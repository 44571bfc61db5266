"""Rule ``train_segmentation``: DeepLab-v2 on one label source, deeplab-pytorch's recipe.

Cross-entropy with 255 ignored on every output of the network (with MSC: scale 1,
each extra scale and their pixel-wise max, labels resized to each by nearest
neighbour, the four losses summed, as deeplab-pytorch's ``main.py train``); SGD with
momentum, poly decay (power 0.9) from the base learning rate, ASPP weights at 10x and
ASPP biases at 20x without weight decay (deeplab-pytorch's ``get_params`` 1x/10x/20x).
Schedules are in epochs (docs/method.md), training resumes through
:func:`esol.engine.fit`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from esol.data.voc import IGNORE, DatasetInfo
from esol.engine import file_digest, fit, history_csv, load_checkpoint, save_checkpoint
from esol.models.backbones import family_label
from esol.models.deeplab import DeepLabArch, DeepLabV2
from esol.segmentation.data import LabelSource, SegmentationDataset
from esol import distributed
from esol.utils import ConfigError, amp_dtype, seed_everything, select_device

log = logging.getLogger(__name__)

Config = Mapping[str, Any]

# What ``segmentation.model.pretrained`` may name besides a file: torchvision's ImageNet
# weights, or the backbone of this run's classifier stage (image labels only).
CLASSIFIER = "classifier"


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) integer labels to ``size`` by nearest neighbour at pixel centres.

    deeplab-pytorch resizes with PIL's NEAREST, which samples pixel centres;
    ``nearest-exact`` does the same (plain ``nearest`` shifts labels by half a pixel).
    """
    if tuple(labels.shape[1:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")[:, 0].long()


def segmentation_loss(outputs: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Sum over the network's outputs of the cross-entropy, 255 ignored.

    Each output (B, K+1, h, w) is compared with ``labels`` (B, H, W) resized to (h, w).
    """
    return sum(F.cross_entropy(out, resize_labels(labels, out.shape[2:]), ignore_index=IGNORE)
               for out in outputs)


def optimizer_groups(net: DeepLabV2, section: Mapping[str, Any]) -> list[dict[str, Any]]:
    """SGD parameter groups: backbone 1x, ASPP weights 10x, ASPP biases 20x without decay."""
    groups = net.param_groups()
    lr, wd = section["lr"], section["weight_decay"]
    return [
        {"params": groups["backbone"], "lr": lr, "weight_decay": wd, "name": "backbone"},
        {"params": groups["aspp_weight"], "lr": lr * section["aspp_weight_lr_mult"],
         "weight_decay": wd, "name": "aspp_weight"},
        {"params": groups["aspp_bias"], "lr": lr * section["aspp_bias_lr_mult"],
         "weight_decay": 0.0, "name": "aspp_bias"},
    ]


def classifier_backbone_state(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The backbone weights of an ESOL classifier checkpoint, under :class:`DeepLabV2`'s names.

    ResNet: both networks hold torchvision's ResNet stages with ``conv1``/``bn1`` as
    ``stem.0``/``stem.1``; DeepLab keeps them at its top level, without the ``backbone.``
    prefix. Other families: DeepLab holds the backbone as ``backbone``, as ESOLNet.
    """
    strip = ckpt["arch"].get("backbone", "resnet") == "resnet"
    return {k.removeprefix("backbone.") if strip else k: v for k, v in ckpt["model"].items()
            if k.startswith("backbone.")}


def labels_digest(source: LabelSource, ids: list[str]) -> str:
    """SHA-1 over the training masks of ``ids`` (name and content): a resume must see the same labels."""
    h = hashlib.sha1()
    for image_id in ids:
        path = source.path(image_id)
        h.update(f"{image_id}:{file_digest(path)}\n".encode())
    return h.hexdigest()


def build_deeplab(cfg: Config, num_classes: int,
                  classifier_ckpt: str | os.PathLike | None = None) -> DeepLabV2:
    """A fresh DeepLab-v2 for ``num_classes`` object classes (+ background), from config.

    ``segmentation.model.pretrained`` is ``none``, ``imagenet``, a weights file, or
    ``classifier``: the backbone of this run's classifier stage (``classifier_ckpt``),
    trained with image-level labels only: the embedded demo's stand-in for ImageNet.
    """
    m = cfg["segmentation"]["model"]
    pretrained = str(m["pretrained"])
    if m["frozen_bn"] and pretrained == "none":
        raise ConfigError(
            "segmentation.model.frozen_bn is true but segmentation.model.pretrained is 'none': "
            "frozen BatchNorm keeps identity statistics, so DeepLab would train without "
            "normalisation. Set frozen_bn: false, or give pretrained weights.")
    name = m.get("name", "resnet")
    arch = DeepLabArch(num_classes=num_classes + 1, backbone=name, depth=m.get("depth", 101),
                       frozen_bn=m["frozen_bn"],
                       rates=tuple(m["aspp_rates"]), msc_scales=tuple(m["msc_scales"]))
    if pretrained != CLASSIFIER:
        return DeepLabV2(arch, pretrained=pretrained)
    if classifier_ckpt is None:
        raise ConfigError("segmentation.model.pretrained is 'classifier' but no classifier "
                          "checkpoint was given")
    ckpt = load_checkpoint(classifier_ckpt)
    family = ckpt["arch"].get("backbone", "resnet")
    if family != name:
        raise ConfigError(f"segmentation.model.pretrained is 'classifier', a {family_label(family, ckpt['arch']['depth'])} "
                          f"(model.backbone.name {family}), but segmentation.model.name is {name}")
    if name == "resnet" and ckpt["arch"]["depth"] != arch.depth:
        raise ConfigError(f"segmentation.model.pretrained is 'classifier', a ResNet-"
                          f"{ckpt['arch']['depth']}, but segmentation.model.depth is {arch.depth}")
    net = DeepLabV2(arch)
    backbone = {k: v for k, v in net.state_dict().items() if not k.startswith("aspp.")}
    renamed = classifier_backbone_state(ckpt)
    missing = sorted(k for k in set(backbone) - set(renamed) if not k.endswith("num_batches_tracked"))
    if missing:
        raise ConfigError(f"classifier checkpoint {classifier_ckpt} lacks {len(missing)} backbone "
                          f"tensors of DeepLab, e.g. {missing[:3]}")
    net.load_state_dict({**net.state_dict(), **{k: renamed[k] for k in backbone if k in renamed}})
    log.info("DeepLab backbone initialised from the classifier stage %s", classifier_ckpt)
    return net


def train_segmentation(cfg: Config, dataset_json: str | os.PathLike, label_dir: str | None,
                       out_model: str | os.PathLike, out_history: str | os.PathLike | None = None,
                       classifier_ckpt: str | os.PathLike | None = None,
                       source: str = "gt") -> list[dict[str, float]]:
    """Train DeepLab-v2 on the training split's masks from ``label_dir`` (None: ground truth)."""
    s = cfg["segmentation"]
    t = s["train"]
    seed_everything(cfg["seed"])
    device = distributed.device_for(select_device(cfg["device"]))
    info = DatasetInfo.from_json(dataset_json)
    split = cfg["dataset"]["train_split"]
    labels = LabelSource(info, label_dir)
    dataset = SegmentationDataset(info, split, labels, t["scale"], t["crop"], seed=cfg["seed"])
    net = build_deeplab(cfg, info.num_classes, classifier_ckpt).to(device).train()
    optimizer = torch.optim.SGD(optimizer_groups(net, t), lr=t["lr"], momentum=t["momentum"])
    log.info("DeepLab-v2 %s (output stride 8, ASPP %s, MSC %s) on %s masks of %s: "
             "%d images, %d epochs", net.backbone_label, list(net.arch.rates),
             list(net.arch.msc_scales) or "off", source, split, len(dataset), t["epochs"])

    def step(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        # fit() runs this under autocast; the loss is taken in float32.
        outputs = [o.float() for o in net.msc_logits(batch["img"])]
        loss = segmentation_loss(outputs, batch["label"])
        with torch.no_grad():
            target = resize_labels(batch["label"], outputs[-1].shape[2:])
            valid = target != IGNORE
            acc = (outputs[-1].argmax(1) == target)[valid].float().mean().item() if valid.any() else 0.0
        return loss, {"pixel_accuracy": acc}

    # What a resume checkpoint must match: config and the content of every input.
    section = {"segmentation": {k: s[k] for k in ("model", "train")}, "source": source,
               "labels": labels_digest(labels, dataset.ids), "seed": cfg["seed"], "amp": cfg["amp"],
               "dataset": file_digest(dataset_json),
               "init": (file_digest(classifier_ckpt)
                        if s["model"]["pretrained"] == CLASSIFIER and classifier_ckpt else None)}
    partial = Path(str(out_model) + ".partial")
    history = fit(params_owner=net, optimizer=optimizer, dataset=dataset, step_fn=step,
                  batch_size=t["batch_size"], epochs=t["epochs"], seed=cfg["seed"],
                  resume_path=partial, checkpoint_every=t["checkpoint_every"], config=section,
                  num_workers=t["num_workers"], poly_power=t["poly_power"],
                  desc=f"deeplab[{source}]", amp=amp_dtype(cfg["amp"], device))
    save_checkpoint(out_model, net.cpu().checkpoint(stage="segmentation", config=section,
                                                    history=history, classes=info.classes))
    partial.unlink(missing_ok=True)
    if out_history is not None:
        history_csv(out_history, history)
    return history
