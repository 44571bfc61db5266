"""AdvCAM (Lee et al., CVPR 2021): anti-adversarial image manipulation as a seed method.

The image is pushed, by normalised gradient *ascent*, toward a higher score of one of
its classes while the other classes' scores are held down, and the regions whose CAM
already exceeds ``score_th`` of its maximum are kept from changing (a regulariser); the
CAMs seen along the way are summed. Implemented after jbeomlee93/AdvCAM,
``obtain_CAM_masking.py`` (``adv_climb``, ``add_discriminative`` and the loop in
``_work``), on this project's classifier so its seeds go through the same evaluation
and refinement as ESOL's. Per step, with ``y = GAP(ReLU(class maps))`` summed over the
image and its flip, ``A`` the class's CAM (image + flipped flip) and ``A_0`` its first:

    loss  = y_c - sum_{k != c} y_k - AD_coeff * sum(|A - A_0| * [A / max A > score_th])
    x    <- clamp(x + AD_stepsize * grad_x loss / max|grad_x loss|, min x, max x)

and the class's map is ``sum_t A_t`` over the ``adv_iter`` steps (t = 0 .. adv_iter - 1).

Differences from the reference, on purpose: ``A`` is this project's CAM, ``ReLU(w_c^T F)``
(the map every other method's seeds are), where AdvCAM takes a Grad-CAM of ResNet
stage 4 of its CAM network; and every scale runs ``adv_iter`` steps (the reference
halves them at scale 0.5 and doubles that scale's maps, a speed trick).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from esol.cam import (
    CamRecord,
    done_ids,
    normalize_cam,
    sum_over_scales,
    write_cams,
)
from esol.data.voc import DatasetInfo, read_image
from esol.models.esol_net import ESOLNet
from esol.utils import DatasetError

log = logging.getLogger(__name__)

# obtain_CAM_masking.py's argparse defaults.
DEFAULTS = {"adv_iter": 27, "ad_coeff": 7.0, "ad_stepsize": 0.08, "score_th": 0.5}


def _class_map(maps: torch.Tensor, c: int, flip: bool) -> torch.Tensor:
    """``A``: ReLU of class ``c``'s map, the flipped copy flipped back and added."""
    a = F.relu(maps[:, c])
    return a[0] + a[1].flip(-1) if flip else a[0]


def discriminative_mask(cam: torch.Tensor, score_th: float) -> torch.Tensor:
    """``add_discriminative``: 1 where ``cam / max(cam) > score_th``, else 0 (no gradient)."""
    cam = cam.detach()
    return (cam / cam.max() > score_th).to(cam.dtype)


def advcam_loss(net: ESOLNet, x: torch.Tensor, c: int, init_cam: torch.Tensor | None,
                ad_coeff: float, score_th: float, flip: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The objective AdvCAM ascends, and the class map ``A`` of this step (see module doc).

    ``init_cam`` None means this is step 0 (``A_0 = A``, so the regulariser is 0).
    """
    maps = net.class_maps(x)
    cam = _class_map(maps, c, flip)
    logit = F.relu(maps).mean(dim=(2, 3))
    # - logit_loss of the reference: -(-2 y_c + sum_k y_k) = y_c - sum_{k != c} y_k.
    logit_loss = -2 * logit[:, c].sum() + logit.sum()
    a0 = cam.detach() if init_cam is None else init_cam
    l_ad = (torch.abs(cam - a0) * discriminative_mask(cam, score_th)).sum()
    return -logit_loss - l_ad * ad_coeff, cam


def adv_climb(x: torch.Tensor, grad: torch.Tensor, step: float) -> torch.Tensor:
    """One ascent step: ``x + step * grad / max|grad|``, clamped to x's range (``adv_climb``)."""
    out = x + step * grad / (grad.abs().max() + 1e-12)
    return torch.clamp(out, x.min().item(), x.max().item())


def advcam_step(net: ESOLNet, x: torch.Tensor, c: int, init_cam: torch.Tensor | None,
                ad_coeff: float, ad_stepsize: float, score_th: float, flip: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One manipulation step: (the image after the step, class map ``A`` before it)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss, cam = advcam_loss(net, x, c, init_cam, ad_coeff, score_th, flip)
        (grad,) = torch.autograd.grad(loss, x)
    return adv_climb(x.detach(), grad, ad_stepsize), cam.detach()


def advcam_class_map(net: ESOLNet, x: torch.Tensor, c: int, adv_iter: int, ad_coeff: float,
                     ad_stepsize: float, score_th: float, flip: bool) -> torch.Tensor:
    """``sum_t A_t`` over ``adv_iter`` steps from image batch ``x`` (image [+ flip])."""
    total = init = None
    for _ in range(adv_iter):
        x, cam = advcam_step(net, x, c, init, ad_coeff, ad_stepsize, score_th, flip)
        init = cam if init is None else init
        total = cam if total is None else total + cam
    return total


def multiscale_advcam(net: ESOLNet, image: np.ndarray, classes: Sequence[int],
                      scales: Sequence[float], flip: bool, settings: Mapping[str, Any],
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """AdvCAM's maps of ``classes`` (0-based) summed over scales, as
    :func:`esol.cam.multiscale_cam` returns CAMs: (K, H/4, W/4) and (K, H, W), other
    classes zero."""
    k = net.classifier.weight.shape[0]

    def maps_of(x: torch.Tensor) -> torch.Tensor:
        cams = None
        for c in classes:
            a = advcam_class_map(net, x, int(c), settings["adv_iter"], settings["ad_coeff"],
                                 settings["ad_stepsize"], settings["score_th"], flip)
            if cams is None:
                cams = torch.zeros((k, *a.shape), device=a.device)
            cams[int(c)] = a
        if cams is None:  # an image without classes: nothing to manipulate
            h, w = x.shape[-2:]
            cams = torch.zeros((k, (h + 15) // 16, (w + 15) // 16), device=x.device)
        return cams

    return sum_over_scales(image, scales, flip, device, maps_of)


def make_advcams(net: ESOLNet, info: DatasetInfo, split: str, out_path: str | os.PathLike,
                 scales: Sequence[float], flip: bool, settings: Mapping[str, Any],
                 device: torch.device, attrs: Mapping[str, Any] | None = None) -> int:
    """Rule ``make_advcam``: AdvCAM maps of every image of ``split``, in the CAM store
    format of :func:`esol.cam.make_cams` (so eval_seed, the CRF and IRN read them)."""
    if net.arch.stage != "classifier":
        # Later stages run their backbone under no_grad: no gradient would reach the image.
        raise ValueError(f"AdvCAM manipulates the classifier's input; got a {net.arch.stage!r} "
                         "checkpoint (an advcam method must have every other switch off)")
    if split not in info.labels:
        raise DatasetError(f"split {split!r} has no masks, so no image labels to choose CAM classes")
    labels = info.labels[split]
    ids = info.ids(split)
    out_path = Path(out_path)
    skip = done_ids(out_path.with_name(out_path.name + ".partial"))
    net = net.to(device).eval()
    for p in net.parameters():  # only the image moves
        p.requires_grad_(False)

    def records() -> Iterator[tuple[str, CamRecord]]:
        for image_id in ids:
            if image_id in skip:
                continue
            image = read_image(info.layout.image(image_id))
            keys = np.asarray(labels[image_id], dtype=np.int64)
            strided, high = multiscale_advcam(net, image, keys - 1, scales, flip, settings, device)
            yield image_id, CamRecord(keys=keys, cam=normalize_cam(strided, keys).cpu().numpy(),
                                      high_res=normalize_cam(high, keys).cpu().numpy())

    meta = {"scales": list(scales), "flip": flip, "split": split, "classes": info.classes,
            "advcam": json.dumps(dict(settings)), **(attrs or {})}
    write_cams(out_path, records(), total=len(ids), attrs=meta, skip=skip)
    return len(ids)


def extract_advcams(checkpoint: str | os.PathLike, dataset_json: str | os.PathLike, split: str,
                    out_path: str | os.PathLike, scales: Sequence[float], flip: bool,
                    settings: Mapping[str, Any], device: str = "auto") -> int:
    """Rule ``make_advcam``: AdvCAM maps of a split from the classifier's checkpoint."""
    from esol.engine import load_checkpoint
    from esol.utils import select_device

    missing = [k for k in DEFAULTS if k not in settings]
    if missing:
        raise ValueError(f"config key advcam lacks {missing} (AdvCAM's defaults: {DEFAULTS})")
    net = ESOLNet.from_checkpoint(load_checkpoint(checkpoint))
    return make_advcams(net, DatasetInfo.from_json(dataset_json), split, out_path, scales, flip,
                        settings, select_device(device), attrs={"checkpoint": str(checkpoint)})
