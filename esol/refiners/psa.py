"""PSA / AffinityNet (Ahn & Kwak, CVPR 2018; code jiwoon-ahn/psa): CAMs to pseudo masks by a
random walk on *predicted* pair affinities.

The four steps of the reference code, and where they are here:

1. **Affinity labels** (``infer_cls.py`` ``_crf_with_alpha``): the CAMs of the classes in
   the image, with a background score ``(1 - max_c CAM_c)^alpha`` in front
   (:func:`bg_augmented`), go through a dense CRF on the image (``tool/imutils.py
   crf_inference``: 10 iterations, Gaussian sxy 3 compat 3, bilateral sxy 80 srgb 13
   compat 10, unaries ``-log`` of the scores) twice: with the low alpha 4 the background
   score is large and only confident foreground survives; with the high alpha 32 it is
   small and only confident background survives. Both CRF score maps are kept per image
   (:func:`make_affinity_scores`).
2. **Training** (``train_aff.py``, ``voc12/data.py VOC12AffDataset``): colour jitter
   (0.3, 0.3, 0.3, 0.1), a random 448 crop of image and score maps (padding: black, as
   PSA crops before normalising, and zero scores), a random flip, the score maps
   averaged over 8x8 blocks, then the label of each stride-8 cell
   (:func:`affinity_label`): the argmax of the low-alpha map (its class), 255 where that
   argmax is background, 0 where the high-alpha argmax is background, 255 where no
   score (padding). Pairs within radius 5 get relation labels
   (:func:`esol.refiners.core.relation_labels`), the network predicts
   ``a_ij = exp(-mean_c |f_i - f_j|)`` (:func:`pair_affinity`) and the loss is
   ``L_bg/4 + L_fg/4 + L_neg/2`` (:func:`psa_loss`).
3. **AffinityNet** (``network/resnet38_aff.py``): three backbone levels projected by 1x1
   convolutions without bias to 64, 128 and 256 channels (ELU), concatenated (448) and
   mixed by a 1x1 convolution 448 -> 448 (ELU), at stride 8. PSA uses ResNet-38 (whose
   conv4/conv5/conv6 are all at stride 8 by dilation); here the backbone is the
   classifier's family, torchvision ResNet (:class:`esol.models.backbone.ResNetBackbone`),
   and the three levels are layer2 (stride 8), layer3 and layer4 (stride 16, upsampled
   bilinearly to layer2's size). As PSA, the first stages (stem and layer1; PSA's
   ``conv1a, b2*``) and BatchNorm stay fixed, the rest of the backbone trains at the base
   learning rate, the new layers at 10x, biases at 2x/20x without weight decay.
4. **Inference** (``infer_aff.py``): the image padded to a multiple of 8, its features;
   the CAMs with background ``(1 - max)^16`` padded with zeros and averaged over 8x8
   blocks; ``A = a^beta`` (beta 8), 2^logt = 256 walk steps (PSA squares the dense matrix
   logt = 8 times; here the shared sparse walk of :mod:`esol.refiners.core` applies it
   256 times, the same product in memory linear in the pixel count); bilinear upsampling
   by 8 and the argmax over background and classes (no threshold).

Deviations, each for a stated reason: all pairs inside the map are used (PSA's index
keeps only sources in an inner rectangle; see :mod:`esol.refiners.core`); the CRF score
maps are stored as uint8 (``round(255 q)``, 1/510 at most off) in one ``.npz`` per image
instead of PSA's float32 ``.npy`` (about 40 GB for VOC train_aug); upsampling uses
``align_corners=False`` (today's PyTorch default). PSA's optimiser passes the weight
decay into SGD's momentum slot (momentum 5e-4) but also sets a real per-group weight
decay: ``momentum`` 0 and ``weight_decay`` 5e-4 reproduce it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn
from tqdm import tqdm

from esol.cam import CamStore, cam_file_identity
from esol.crf import crf_probs
from esol.data import transforms as T
from esol.data.datasets import EpochSeededDataset
from esol.data.voc import DatasetInfo, read_image, write_label
from esol.engine import file_digest, fit, history_csv, load_checkpoint, save_checkpoint
from esol.labeldir import LabelDir, parallel_map
from esol.models.backbones import build_backbone
from esol.models.esol_net import ESOLNet
from esol.learning import check_at_most, checks_config, map_figures
from esol.refine import calibrate, preset_gamma
from esol.refiners import core
from esol.shards import WHOLE, Shard, shard_ids
from esol.utils import (ConfigError, DatasetError, amp_dtype, atomic_path, autocast, evaluating,
                        seed_everything, select_device, tqdm_kwargs)

log = logging.getLogger(__name__)

Config = Mapping[str, Any]

EPS = 1e-5
STRIDE = 8

#: PSA's settings (README commands and argparse defaults of jiwoon-ahn/psa), the shape of
#: the ``psa`` config section. docs/refiners.md gives the demo's values beside them.
PSA_DEFAULTS: dict[str, Any] = {
    "calibrate_to": None,  # CAMs ** g with t_seed ** g = this (esol.refine); None: raw CAMs (PSA)
    "labels": {
        "low_alpha": 4,   # infer_cls.py --low_alpha: confident foreground
        "high_alpha": 32,  # --high_alpha: confident background
        "crf": {"iterations": 10, "gaussian": {"sxy": 3, "compat": 3},
                "bilateral": {"sxy": 80, "srgb": 13, "compat": 10}},
    },
    "train": {
        "backbone": "model",  # PSA starts from ImageNet weights; 'classifier': the trained f
        "radius": 5, "epochs": 8, "batch_size": 8, "crop": 448, "lr": 0.1,
        "new_lr_mult": 10, "momentum": 0.0, "weight_decay": 5e-4,
        "color_jitter": [0.3, 0.3, 0.3, 0.1], "checkpoint_every": 100, "num_workers": 0,
    },
    "random_walk": {"radius": 5, "alpha": 16, "beta": 8, "logt": 8},
}


def psa_section(cfg: Config) -> Config:
    """The ``psa`` config section, or one clear error."""
    if "psa" not in cfg:
        raise ConfigError("config has no 'psa' section (the PSA refiner's settings; "
                          "docs/refiners.md lists its keys)")
    return cfg["psa"]


# -- 1. affinity labels ---------------------------------------------------------------

def bg_augmented(cams: np.ndarray, alpha: float) -> np.ndarray:
    """``[(1 - max_c cams)^alpha, cams...]``, (1 + n, H, W) float32 (PSA ``_crf_with_alpha``,
    ``infer_aff.py``). Without classes the background score is 1."""
    cams = np.asarray(cams, dtype=np.float32)
    peak = cams.max(0) if cams.shape[0] else np.zeros(cams.shape[1:], np.float32)
    bg = np.power(1.0 - peak, alpha, dtype=np.float32)
    return np.concatenate([bg[None], cams])


def crf_scores(image: np.ndarray, probs: np.ndarray, crf_cfg: Config) -> np.ndarray:
    """Dense-CRF marginals (L, H, W) from scores (L, H, W), PSA ``tool/imutils.crf_inference``.

    Unaries are ``-log`` of the scores (pydensecrf ``unary_from_softmax``, clipped at
    1e-5; PSA passes the unnormalised background-augmented CAM, and so does this).
    """
    n, h, w = probs.shape
    if n < 2:
        return np.ones((n, h, w), np.float32)
    return crf_probs(image, probs, crf_cfg)


def affinity_scores(image: np.ndarray, cams: np.ndarray, low_alpha: float, high_alpha: float,
                    crf_cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """``(la, ha)``: CRF scores (1 + n, H, W) of the CAMs with background at the low alpha
    (confident foreground) and the high alpha (confident background)."""
    return (crf_scores(image, bg_augmented(cams, low_alpha), crf_cfg),
            crf_scores(image, bg_augmented(cams, high_alpha), crf_cfg))


def affinity_label(la: np.ndarray, ha: np.ndarray) -> np.ndarray:
    """Label map (h, w) uint8 from block-averaged score maps (1 + n, h, w), PSA's
    ``VOC12AffDataset.__getitem__``: the low-alpha argmax (an index: 0 background,
    ``i`` the i-th class of the image), 255 where it is background, 0 where the high-alpha
    argmax is background, 255 where no map has a score (padding outside the image)."""
    no_score = np.maximum(la.max(0), ha.max(0)) < EPS
    label_la = la.argmax(0).astype(np.uint8)
    label_ha = ha.argmax(0).astype(np.uint8)
    label = label_la.copy()
    label[label_la == 0] = core.IGNORE
    label[label_ha == 0] = 0
    label[no_score] = core.IGNORE
    return label


def block_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over ``k x k`` blocks of (H, W, C) with H, W multiples of k (PSA ``AvgPool2d``)."""
    h, w, c = x.shape
    return x.reshape(h // k, k, w // k, k, c).mean(axis=(1, 3))


def _quantise(q: np.ndarray) -> np.ndarray:
    return np.round(np.clip(q, 0.0, 1.0) * 255.0).astype(np.uint8)


class _ScoreDir(LabelDir):
    """A folder of ``<id>.npz`` score maps, built through ``<folder>.partial``."""

    suffix = ".npz"


_WORKER: dict[str, Any] = {}


def _init_worker(dataset_json: str, cam_path: str, out_dir: str, params: dict[str, Any]) -> None:
    _WORKER.clear()
    _WORKER.update(info=DatasetInfo.from_json(dataset_json), store=CamStore(cam_path),
                   out=Path(out_dir), params=params)


def _scores_one(image_id: str) -> str:
    w, p = _WORKER, _WORKER["params"]
    rec = w["store"][image_id]
    image = read_image(w["info"].layout.image(image_id))
    if rec.high_res.shape[1:] != image.shape[:2]:
        raise DatasetError(f"CAM of {image_id!r} in {w['store'].path} is {rec.high_res.shape[1:]} "
                           f"but its image is {image.shape[:2]}")
    cams = calibrate(rec.high_res.astype(np.float32), p["gamma"])
    la, ha = affinity_scores(image, cams, p["low_alpha"], p["high_alpha"], p["crf"])
    with atomic_path(w["out"] / f"{image_id}.npz", suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, la=_quantise(la), ha=_quantise(ha), keys=np.asarray(rec.keys))
    return image_id


def make_affinity_scores(psa: Config, dataset_json: str | os.PathLike, cam_path: str | os.PathLike,
                         out_dir: str | os.PathLike, *, train_split: str, threshold: float | str,
                         tuning_split: str | None = None, guarded: Mapping[str, str] | None = None,
                         threshold_json: str | os.PathLike | None = None, threads: int = 1) -> int:
    """Rule ``psa_labels``: the low- and high-alpha CRF scores of every image of
    ``train_split``, one ``<id>.npz`` (``la``, ``ha`` uint8 (1 + n, H, W), ``keys``) per image.

    ``psa``: the config section; ``threshold``, ``tuning_split``, ``guarded``,
    ``threshold_json``: the preset threshold (:func:`esol.refine.preset_gamma`), the only
    one that may calibrate maps that train a network.
    """
    labels = psa["labels"]
    if not labels["low_alpha"] < labels["high_alpha"]:
        raise ConfigError(f"psa.labels.low_alpha ({labels['low_alpha']}) must be below "
                          f"psa.labels.high_alpha ({labels['high_alpha']})")
    info = DatasetInfo.from_json(dataset_json)
    ids = info.ids(train_split)
    gamma, t, how = preset_gamma(threshold, tuning_split, guarded or {}, info, threshold_json,
                                 psa.get("calibrate_to"))
    log.info("PSA affinity labels: alpha %s / %s on CAMs ** %.3f (threshold %.2f %s), %d images, "
             "%d processes", labels["low_alpha"], labels["high_alpha"], gamma, t, how, len(ids),
             threads)
    params = {"low_alpha": labels["low_alpha"], "high_alpha": labels["high_alpha"],
              "gamma": gamma, "crf": dict(labels["crf"])}
    target = _ScoreDir(out_dir, {"cams": cam_file_identity(cam_path),
                                 "dataset": file_digest(dataset_json), "ids": ids, **params})
    todo = target.todo(ids)
    args = (str(dataset_json), str(cam_path), str(target.partial), params)
    try:
        for _ in parallel_map(_scores_one, todo, threads, "PSA labels", initializer=_init_worker,
                              initargs=args):
            pass
    finally:
        if "store" in _WORKER:
            _WORKER.pop("store").close()
    target.finish()
    return len(ids)


# -- 2. training data ---------------------------------------------------------------------

def color_jitter(img: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float,
                 saturation: float, hue: float) -> np.ndarray:
    """torchvision's ``ColorJitter`` (PSA's first image transform) drawn from ``rng``: factors
    uniform in ``[1 - v, 1 + v]`` (hue in ``[-hue, hue]``), applied in a random order."""
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    ops = [(TF.adjust_brightness, brightness), (TF.adjust_contrast, contrast),
           (TF.adjust_saturation, saturation), (TF.adjust_hue, hue)]
    for i in rng.permutation(4):
        fn, v = ops[int(i)]
        if v <= 0:
            continue
        factor = rng.uniform(-v, v) if fn is TF.adjust_hue else rng.uniform(max(0.0, 1 - v), 1 + v)
        x = fn(x, float(factor))
    return x.numpy().transpose(1, 2, 0)


def read_scores(path: Path, image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(la, ha)`` of one image as float32 (1 + n, H, W), checked against its image size."""
    try:
        with np.load(path) as z:
            la, ha = z["la"], z["ha"]
    except FileNotFoundError:
        raise DatasetError(f"PSA score file not found: {path}") from None
    except (OSError, ValueError, KeyError) as err:
        raise DatasetError(f"unreadable PSA score file {path}: {err}") from None
    if la.shape != ha.shape or la.shape[1:] != tuple(image_shape):
        raise DatasetError(f"PSA scores {path} are {la.shape} / {ha.shape} but the image is "
                           f"{tuple(image_shape)}")
    return la.astype(np.float32) / 255.0, ha.astype(np.float32) / 255.0


_BLACK = T.normalize(np.zeros((1, 1, 3), np.uint8))[0, 0]


class PSADataset(EpochSeededDataset):
    """Images and stride-8 affinity label maps, augmented as PSA's ``VOC12AffDataset``.

    Colour jitter, ImageNet normalisation, one random ``crop`` window over image and
    both score maps (image padded black, scores with 0), a random
    horizontal flip, 8x8 block means of the scores, :func:`affinity_label`. No rescaling
    (PSA's affinity training has none). The RNG is fixed by ``(seed, epoch, index)``.
    """

    def __init__(self, info: DatasetInfo, split: str, score_dir: str | os.PathLike, crop: int,
                 jitter: Sequence[float] = (0.3, 0.3, 0.3, 0.1), seed: int = 0) -> None:
        if crop % STRIDE:
            raise ConfigError(f"psa.train.crop must be a multiple of {STRIDE} (the feature stride), "
                              f"got {crop}")
        self.info, self.ids = info, info.ids(split)
        self.score_dir = Path(score_dir)
        self.crop, self.jitter, self.seed = int(crop), tuple(jitter), seed

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        rng = self.rng(index)
        img = read_image(self.info.layout.image(image_id))
        la, ha = read_scores(self.score_dir / f"{image_id}.npz", img.shape[:2])
        img = T.normalize(color_jitter(img, rng, *self.jitter))
        k = la.shape[0]
        stack = np.concatenate([img, la.transpose(1, 2, 0), ha.transpose(1, 2, 0)], axis=2)
        # PSA crops before it normalises: the image is padded black, the scores with 0.
        fill = np.concatenate([_BLACK, np.zeros(2 * k, np.float32)])
        stack = T.random_crop(stack, self.crop, rng, fill=fill)
        stack = T.random_hflip(stack, rng)
        scores = block_mean(np.ascontiguousarray(stack[..., 3:]), STRIDE)
        label = affinity_label(scores[..., :k].transpose(2, 0, 1), scores[..., k:].transpose(2, 0, 1))
        return {"img": torch.from_numpy(T.to_chw(stack[..., :3])),
                "label": torch.from_numpy(label.astype(np.int64)), "id": image_id}


# -- 3. AffinityNet --------------------------------------------------------------------------

@dataclass(frozen=True)
class PSAArch:
    """What rebuilds an AffinityNet exactly; stored in its checkpoint."""

    depth: int = 50
    frozen_bn: bool = True
    backbone: str = "resnet"  # the family (model.backbone.name)


class AffinityNet(nn.Module):
    """ResNet backbone + PSA's affinity head (``network/resnet38_aff.py``): features (B, 448,
    h, w) at stride 8 whose L1 distances give the pair affinities."""

    def __init__(self, arch: PSAArch, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = backbone if backbone is not None else build_backbone(
            arch.backbone, depth=arch.depth, pretrained="none", frozen_bn=arch.frozen_bn)
        c = self.backbone.level_channels  # levels 2-4: ResNet's layer2, layer3, layer4
        self.f8_3 = nn.Conv2d(c[2], 64, 1, bias=False)
        self.f8_4 = nn.Conv2d(c[3], 128, 1, bias=False)
        self.f8_5 = nn.Conv2d(c[4], 256, 1, bias=False)
        self.f9 = nn.Conv2d(448, 448, 1, bias=False)
        for conv in (self.f8_3, self.f8_4, self.f8_5):
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)
        # PSA's not_training: conv1a and the b2 blocks, here the stem and layer1.
        self.backbone.requires_grad_(True)
        for stage in self.backbone.stages[:2]:
            stage.requires_grad_(False)
        for m in self.backbone.modules():  # frozen BatchNorm keeps its buffers only
            if isinstance(m, nn.BatchNorm2d):
                m.requires_grad_(False)

    def train(self, mode: bool = True) -> AffinityNet:
        super().train(mode)
        for m in self.backbone.modules():  # PSA's resnet38d.train(): BatchNorm stays in eval
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def new_layers(self) -> list[nn.Module]:
        return [self.f8_3, self.f8_4, self.f8_5, self.f9]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2, x3, x4 = self.backbone.forward_levels(x)[2:]
        size = x2.shape[-2:]
        f3 = F.elu(self.f8_3(x2))
        f4 = F.elu(F.interpolate(self.f8_4(x3), size=size, mode="bilinear", align_corners=False))
        f5 = F.elu(F.interpolate(self.f8_5(x4), size=size, mode="bilinear", align_corners=False))
        return F.elu(self.f9(torch.cat([f3, f4, f5], dim=1)))

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        return {"psa_arch": asdict(self.arch), "model": self.state_dict(), **extra}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> AffinityNet:
        if "psa_arch" not in ckpt:
            raise ConfigError("checkpoint is not an AffinityNet (no 'psa_arch'): pass train_psa's output")
        net = cls(PSAArch(**ckpt["psa_arch"]))
        net.load_state_dict(ckpt["model"])
        return net


def pair_affinity(features: torch.Tensor, pairs: core.Pairs) -> torch.Tensor:
    """``a_ij = exp(-mean_c |f_i - f_j|)`` for every pair, (B, P) from features (B, C, h, w).

    Offset by offset on slices of the map (the order of ``pairs``), so no (B, C, P) gather
    is ever held beyond one offset's share outside autograd.
    """
    if tuple(features.shape[-2:]) != pairs.size:
        raise ValueError(f"feature map {tuple(features.shape[-2:])} does not match the pairs "
                         f"built for {pairs.size}")
    out = []
    for dy, dx, y0, y1, x0, x1 in pairs.slices:
        a = features[:, :, y0:y1, x0:x1]
        b = features[:, :, y0 + dy:y1 + dy, x0 + dx:x1 + dx]
        out.append(torch.exp(-(a - b).abs().mean(1)).flatten(1))
    if not out:
        return features.new_zeros(features.shape[0], 0)
    return torch.cat(out, dim=1)


def psa_loss(aff: torch.Tensor, labels: Mapping[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """PSA's ``train_aff.py`` loss from affinities (B, P) and relation labels (B, P):

    ``L_bg = sum(-bg log(a + 1e-5)) / (|bg| + 1e-5)``, ``L_fg`` likewise over foreground
    pairs, ``L_neg = sum(-neg log(1 + 1e-5 - a)) / (|neg| + 1e-5)``;
    total ``L_bg / 4 + L_fg / 4 + L_neg / 2``.
    """
    bg, fg, neg = labels["bg_pos"], labels["fg_pos"], labels["neg"]
    bg_loss = torch.sum(-bg * torch.log(aff + EPS)) / (bg.sum() + EPS)
    fg_loss = torch.sum(-fg * torch.log(aff + EPS)) / (fg.sum() + EPS)
    neg_loss = torch.sum(-neg * torch.log(1.0 + EPS - aff)) / (neg.sum() + EPS)
    loss = bg_loss / 4 + fg_loss / 4 + neg_loss / 2
    return loss, {"bg_loss": bg_loss.item(), "fg_loss": fg_loss.item(), "neg_loss": neg_loss.item(),
                  "bg_pairs": bg.sum().item(), "fg_pairs": fg.sum().item(),
                  "neg_pairs": neg.sum().item()}


def build_affinity_net(train: Config, model: Config,
                       classifier_ckpt: str | os.PathLike | None) -> AffinityNet:
    """A fresh AffinityNet whose backbone comes from ``train["backbone"]`` (``psa.train``):
    ``model`` (config ``model.backbone``; PSA: ImageNet weights) or ``classifier`` (the
    trained ``f``)."""
    source = train["backbone"]
    if source == "classifier":
        if classifier_ckpt is None:
            raise ConfigError("psa.train.backbone is 'classifier' but no classifier checkpoint was given")
        net = ESOLNet.from_checkpoint(load_checkpoint(classifier_ckpt))
        return AffinityNet(PSAArch(depth=net.arch.depth, frozen_bn=net.arch.frozen_bn,
                                   backbone=net.arch.backbone), backbone=net.backbone)
    if source != "model":
        raise ConfigError(f"psa.train.backbone must be 'model' or 'classifier', got {source!r}")
    b = model["backbone"]
    if b["pretrained"] == "none":
        log.warning("psa.train.backbone is 'model' with model.backbone.pretrained 'none': "
                    "AffinityNet trains its backbone from random weights")
    name, depth = b.get("name", "resnet"), b.get("depth", 50)
    backbone = build_backbone(name, depth=depth, pretrained=str(b["pretrained"]), frozen_bn=b["frozen_bn"])
    return AffinityNet(PSAArch(depth=depth, frozen_bn=b["frozen_bn"], backbone=name), backbone=backbone)


def parameter_groups(net: AffinityNet, lr: float, new_lr_mult: float, weight_decay: float
                     ) -> list[dict[str, Any]]:
    """PSA's four groups (``get_parameter_groups`` + ``train_aff.py``): backbone weights
    (lr, wd), backbone biases/affine (2 lr, no wd), new weights (``new_lr_mult`` lr, wd),
    new biases (2 ``new_lr_mult`` lr, no wd). Empty groups are left out."""
    new = {id(p) for m in net.new_layers() for p in m.parameters()}
    groups: list[list[nn.Parameter]] = [[], [], [], []]
    for p in net.parameters():
        if p.requires_grad:
            groups[(2 if id(p) in new else 0) + (1 if p.ndim == 1 else 0)].append(p)
    specs = [(1, weight_decay), (2, 0.0), (new_lr_mult, weight_decay), (2 * new_lr_mult, 0.0)]
    return [{"params": g, "lr": lr * m, "weight_decay": wd}
            for g, (m, wd) in zip(groups, specs, strict=True) if g]


def train_psa(psa: Config, dataset_json: str | os.PathLike, score_dir: str | os.PathLike,
              classifier_ckpt: str | os.PathLike | None, out_model: str | os.PathLike,
              out_history: str | os.PathLike | None = None, *, train_split: str, model: Config,
              seed: int = 0, device: str = "auto", amp: str = "fp32",
              checks: Config | None = None) -> list[dict[str, float]]:
    """Rule ``train_psa``: learn pair affinities from the affinity labels (PSA ``train_aff.py``)
    through the resumable :func:`esol.engine.fit`, then the learning check
    (:func:`affinity_figures`; ``checks``: config section ``checks``, None: off).

    ``psa``: the config section; ``model``: config ``model`` (the backbone when
    ``psa.train.backbone`` is ``model``).
    """
    t = psa["train"]
    seed_everything(seed)
    dev = select_device(device)
    info = DatasetInfo.from_json(dataset_json)
    split = train_split
    dataset = PSADataset(info, split, score_dir, t["crop"], t["color_jitter"], seed=seed)
    net = build_affinity_net(t, model, classifier_ckpt).to(dev).train()
    optimizer = torch.optim.SGD(parameter_groups(net, t["lr"], t["new_lr_mult"], t["weight_decay"]),
                                lr=t["lr"], momentum=t["momentum"])
    pairs = core.pairs_in_radius((t["crop"] // STRIDE, t["crop"] // STRIDE), t["radius"])
    log.info("PSA: ResNet-%d backbone (%s), %d images of %s, %d pairs per crop (radius %d), "
             "%d epochs", net.arch.depth, t["backbone"], len(dataset), split, len(pairs),
             t["radius"], t["epochs"])

    def step(batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        # Affinities and loss in float32 even under autocast: log(1 + 1e-5 - a) is log(0) in bf16.
        aff = pair_affinity(net(batch["img"]).float(), pairs)
        return psa_loss(aff, core.relation_labels(batch["label"], pairs))

    # What a resume checkpoint must match: config and input content, not just names.
    section = {"psa": t, "model": model, "seed": seed, "amp": amp,
               "dataset": file_digest(dataset_json), "scores": _npz_digest(score_dir),
               "classifier": None if classifier_ckpt is None else file_digest(classifier_ckpt)}
    partial = Path(str(out_model) + ".partial")
    history = fit(params_owner=net, optimizer=optimizer, dataset=dataset, step_fn=step,
                  batch_size=t["batch_size"], epochs=t["epochs"], seed=seed,
                  resume_path=partial, checkpoint_every=t["checkpoint_every"], config=section,
                  num_workers=t["num_workers"], desc="psa", amp=amp_dtype(amp, dev))
    figures = affinity_figures(net, info, dataset.ids[:8], t["radius"], dev, amp_dtype(amp, dev))
    save_checkpoint(out_model, net.cpu().checkpoint(config=section, history=history))
    partial.unlink(missing_ok=True)
    if out_history is not None:
        history_csv(out_history, history)
    checks = None if checks is None else checks_config({"checks": checks})
    if checks is not None and checks["enabled"]:
        # IRN's check on its boundary maps, on PSA's affinities: a constant map means
        # features that tell no pixel from its neighbour, and the walk floods the image.
        check_at_most("psa", figures, "uninformative_share",
                      float(checks["max_constant_boundary_share"]),
                      key="checks.max_constant_boundary_share")
    return history


@torch.no_grad()
def affinity_figures(net: AffinityNet, info: DatasetInfo, ids: Sequence[str], radius: int,
                     device: torch.device, amp: torch.dtype | None = None) -> dict[str, float]:
    """Shares of empty or constant pair-affinity maps (:func:`esol.learning.map_figures`,
    one map per image: every pair's ``a_ij``) of ``ids`` in eval mode."""
    with evaluating(net):
        maps = []
        for image_id in ids:
            image = read_image(info.layout.image(image_id))
            h, w = image.shape[:2]
            x = torch.from_numpy(T.to_chw(T.normalize(image)))[None]
            x = F.pad(x, (0, (-w) % STRIDE, 0, (-h) % STRIDE)).to(device)
            with autocast(amp, device):
                feats = net(x).float()
            pairs = core.pairs_in_radius(tuple(feats.shape[-2:]), radius)
            maps.append(pair_affinity(feats, pairs)[0].cpu().numpy())
    figures = map_figures(maps)
    log.info("PSA check on %d training images: %.0f%% of affinity maps empty, %.0f%% constant",
             len(ids), 100 * figures["empty_share"], 100 * figures["constant_share"])
    return figures


def _npz_digest(path: str | os.PathLike) -> str:
    """SHA-1 over the names and bytes of a score folder's files (resume fingerprint, as
    :func:`esol.labeldir.dir_digest` for label folders)."""
    h = hashlib.sha1()
    for f in sorted(Path(path).glob("*.npz")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# -- 4. inference --------------------------------------------------------------------------

def cam_at_stride(cams: np.ndarray, alpha: float, stride: int = STRIDE) -> torch.Tensor:
    """Background-augmented CAMs (1 + n, ceil(H/s), ceil(W/s)) as ``infer_aff.py``: background
    ``(1 - max)^alpha`` at full size, zero padding to a multiple of ``s``, ``s x s`` means."""
    full = torch.from_numpy(bg_augmented(cams, alpha))
    h, w = full.shape[1:]
    full = F.pad(full, (0, (-w) % stride, 0, (-h) % stride))
    return F.avg_pool2d(full[None], stride, stride)[0]


def psa_random_walk(scores: torch.Tensor, aff: torch.Tensor, pairs: core.Pairs, beta: float,
                    logt: int) -> torch.Tensor:
    """``2^logt`` steps of the walk on ``A = aff^beta`` (PSA ``infer_aff.py``), (C, h, w)."""
    src, dst = pairs.tensors(aff.device)
    p = core.transition_matrix(src, dst, aff.float() ** beta, pairs.size[0] * pairs.size[1])
    return core.random_walk(scores.float(), p, 2 ** int(logt))


def walk_to_label(walked: torch.Tensor, keys: np.ndarray, size: tuple[int, int],
                  stride: int = STRIDE) -> np.ndarray:
    """Pseudo label (H, W) uint8 of mask values: walked scores (1 + n, h, w) upsampled
    bilinearly by ``stride``, cropped to ``size``, argmax (background first), keys."""
    up = F.interpolate(walked[None].float(), scale_factor=stride, mode="bilinear",
                       align_corners=False)[0, :, :size[0], :size[1]]
    lut = np.concatenate([[0], np.asarray(keys, dtype=np.int64)]).astype(np.uint8)
    return lut[up.argmax(0).cpu().numpy()]


def pseudo_label(net: AffinityNet, image: np.ndarray, cams: np.ndarray, keys: np.ndarray,
                 walk: Config, device: torch.device | str = "cpu",
                 amp: torch.dtype | None = None) -> np.ndarray:
    """PSA's pseudo label (H, W) of one image from its full-size CAMs (n, H, W)."""
    device = torch.device(device)
    h, w = image.shape[:2]
    x = torch.from_numpy(T.to_chw(T.normalize(image)))[None]
    x = F.pad(x, (0, (-w) % STRIDE, 0, (-h) % STRIDE)).to(device)  # PSA: zero (mean colour) padding
    with torch.no_grad(), autocast(amp, device):
        feats = net(x).float()
    scores = cam_at_stride(cams, walk["alpha"]).to(device)
    if feats.shape[-2:] != scores.shape[-2:]:
        raise DatasetError(f"AffinityNet features {tuple(feats.shape[-2:])} do not match the "
                           f"stride-8 CAM {tuple(scores.shape[-2:])} of an image of {(h, w)}")
    pairs = core.pairs_in_radius(tuple(scores.shape[-2:]), walk["radius"])
    with torch.no_grad():
        aff = pair_affinity(feats, pairs)[0]
        walked = psa_random_walk(scores, aff, pairs, walk["beta"], walk["logt"])
    return walk_to_label(walked, keys, (h, w))


@torch.no_grad()
def make_psa_masks(psa: Config, dataset_json: str | os.PathLike, psa_ckpt: str | os.PathLike,
                   cam_path: str | os.PathLike, out_dir: str | os.PathLike, *, split: str,
                   threshold: float | str, tuning_split: str | None = None,
                   guarded: Mapping[str, str] | None = None,
                   threshold_json: str | os.PathLike | None = None, device: str = "auto",
                   amp: str = "fp32", shard: Shard = WHOLE) -> int:
    """Rule ``psa_masks``: a palette PNG per image of ``split`` (the training split),
    walking the CAMs calibrated by ``psa.calibrate_to`` from the preset threshold
    (``threshold``, ``tuning_split``, ``guarded``, ``threshold_json``: as
    :func:`make_affinity_scores`). ``shard`` ``(k, n)``: only part k of n, into a shard
    folder (gathered by :func:`esol.labeldir.gather_split`)."""
    dev = select_device(device)
    amp_t = amp_dtype(amp, dev)
    walk = psa["random_walk"]
    info = DatasetInfo.from_json(dataset_json)
    ids = info.ids(split)
    net = AffinityNet.from_checkpoint(load_checkpoint(psa_ckpt)).to(dev).eval()
    gamma, t, how = preset_gamma(threshold, tuning_split, guarded or {}, info, threshold_json,
                                 psa.get("calibrate_to"))
    log.info("PSA random walk: CAMs ** %.3f (threshold %.2f %s), alpha %s, beta %s, %d steps",
             gamma, t, how, walk["alpha"], walk["beta"], 2 ** int(walk["logt"]))
    target = LabelDir(out_dir, {"psa": file_digest(psa_ckpt), "cams": cam_file_identity(cam_path),
                                "dataset": file_digest(dataset_json), "ids": ids, "walk": dict(walk),
                                "gamma": gamma, "amp": str(amp_t)}, shard)
    with CamStore(cam_path) as store:
        for image_id in tqdm(target.todo(shard_ids(ids, *shard)), desc="PSA masks", unit="img", **tqdm_kwargs()):
            rec = store[image_id]
            image = read_image(info.layout.image(image_id))
            if rec.high_res.shape[1:] != image.shape[:2]:
                raise DatasetError(f"CAM of {image_id!r} in {cam_path} is {rec.high_res.shape[1:]} "
                                   f"but its image is {image.shape[:2]}")
            cams = calibrate(rec.high_res.astype(np.float32), gamma)
            write_label(target.partial / f"{image_id}.png",
                        pseudo_label(net, image, cams, rec.keys, walk, dev, amp_t))
    target.finish()
    return len(ids)
