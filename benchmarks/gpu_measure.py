"""Time the full-scale stages on a GPU and project each stage's hours from the config.

Not a test: it measures and writes figures to a JSON file (README, "How long each
stage takes"). Run it on a machine with a GPU:

    python benchmarks/gpu_measure.py --config config/voc12.yaml --size 375 500 --classes 20 \
        --out benchmarks/out/gpu_measure_voc12.json

Measured with this project's code, on random tensors of the configured sizes (timing
does not depend on the pixel values): one optimiser step of the classifier, Expansion
and Shrinkage at the configured batch size and crop, and the multi-scale + flip CAM of
one image (``--size``, the dataset's typical image) for the baseline and the ESOL
network. The sampler stages and the ESOL CAM are timed with each ``--deform-impl``
(``sampled``, the pipeline's, and ``torchvision``'s reference operator; the first one
listed gives the hours). Each is timed under every ``--amp`` mode (fp32: full precision, TF32 off as
PyTorch's default; bf16: autocast as ``amp: auto`` gives on a recent GPU).

IRN and DeepLab-v2 are timed with the pipeline's own modules too (``esol.irn``,
``esol.models.deeplab``, ``esol.segmentation``): an IRN training step at ``irn.train``'s
crop and batch (frozen backbone, boundary and displacement branches, IRN's loss over
the relation pairs), one pseudo label (boundary map of the image and its mirror, the
sparse random walk of ``2^exp_times`` steps over ``--classes-per-image`` score maps), a
DeepLab-v2 step with MSC at ``segmentation.train``'s crop and batch, and multi-scale +
flip prediction of one ``--size`` image.

Hours = images processed by the stage under the config (``gpu_estimate.workload``;
epochs x training-split images for IRN and DeepLab; one walk per training image and
refined method; one prediction per evaluation image and DeepLab) / measured images
per second. Data loading, checkpointing, HDF5 writes and CRF (on the CPU) are not
included.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from esol.cam import multiscale_cam
from esol.data.voc import IGNORE
from esol.evaluate import write_json
from esol.irn.losses import irn_loss
from esol.irn.net import IRNArch, IRNet
from esol.irn.paths import pair_index, path_affinity, relation_labels
from esol.irn.random_walk import random_walk, walk_to_label
from esol.losses import classification_loss
from esol.models.backbone import ResNetBackbone
from esol.models.deform import DEFORM_IMPLS
from esol.models.deeplab import DeepLabArch, DeepLabV2
from esol.segmentation.predict import multiscale_probs
from esol.segmentation.train import segmentation_loss
from esol.stages import build_classifier, expansion_objective, shrinkage_objective
from esol.utils import autocast
from gpu_estimate import workload

AMP = {"fp32": None, "bf16": torch.bfloat16}
CUDA = torch.device("cuda")  # the stage functions also run on the CPU (tests/test_benchmarks.py)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], warmup: int, reps: int) -> float:
    """Seconds per call of ``fn`` (CUDA synchronised), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync()
    return (time.perf_counter() - start) / reps


def esol_stages(cfg: dict, size: tuple[int, int], classes: int, dtype, warmup: int, reps: int,
                cam_images: int, dev: torch.device = CUDA,
                impls: tuple[str, ...] = DEFORM_IMPLS) -> dict[str, float]:
    """Images per second of the classifier, Expansion, Shrinkage steps and of make_cam.

    The sampler stages and the ESOL network's CAM are timed for each deformable-layer
    implementation in ``impls``: the first under the plain names (``expansion``,
    ``shrinkage``, ``make_cam_esol``, what the pipeline runs), the others as
    ``<name>/<impl>`` (e.g. ``expansion/torchvision``, the reference operator).
    """
    cfg = copy.deepcopy(cfg)
    cfg["model"]["backbone"].update(pretrained="none", frozen_bn=False)  # as gpu_estimate.py
    bs, crop = cfg["classifier"]["batch_size"], cfg["classifier"]["crop"]
    x = torch.randn(bs, 3, crop, crop, device=dev)
    y = (torch.rand(bs, classes, device=dev) < 0.1).float()
    y[:, 0] = 1
    net = build_classifier(cfg, classes).to(dev).train()

    def stepper(model, objective, params):
        opt = torch.optim.SGD(params, lr=1e-6)

        def step():
            with autocast(dtype, dev):
                maps = model.class_maps(x)
                loss, _ = objective(maps.float().mean((2, 3)), maps.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def cam_rate(model) -> float:
        def cam():
            with torch.no_grad():
                multiscale_cam(model, image, cfg["cam"]["scales"], cfg["cam"]["flip"], dev, dtype)
        return 1 / timed(cam, 2, cam_images)

    out = {"classifier": bs / timed(stepper(net, lambda lg, m, t: (classification_loss(lg, t), {}),
                                            net.parameters()), warmup, reps)}
    net.eval()
    image = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    out["make_cam_cam"] = cam_rate(net)
    for i, impl in enumerate(impls):
        tag = "" if i == 0 else f"/{impl}"
        esol = copy.deepcopy(net).set_deform_impl(impl)
        params = esol.to_expansion(True, cfg["expansion"]["clip_beta"])
        out[f"expansion{tag}"] = bs / timed(
            stepper(esol, expansion_objective(cfg["expansion"]["alpha"]), params), warmup, reps)
        params = esol.to_shrinkage(True)
        out[f"shrinkage{tag}"] = bs / timed(
            stepper(esol, shrinkage_objective(cfg["shrinkage"]["gamma"], cfg["shrinkage"]["mu"]),
                    params), warmup, reps)
        out[f"make_cam_esol{tag}"] = cam_rate(esol)
        del esol, params
    return out


def irn_stage(cfg: dict, size: tuple[int, int], classes_per_image: int, dtype, warmup: int,
              reps: int, images: int, dev: torch.device = CUDA) -> dict[str, float]:
    """IRN training steps and per-image pseudo labels, with the pipeline's own modules.

    Training: ``IRNet`` on a frozen ResNet of ``model.backbone.depth`` (weights do not
    change the time), crop and batch of ``irn.train``, the relation pairs within
    ``irn.train.radius`` and the IRN loss of ``esol.irn.stage.train_irn``. Pseudo labels:
    the boundary map of the image and its mirror, then ``random_walk`` (sparse
    transition matrix, ``2^exp_times`` steps) of ``classes_per_image`` score maps, as
    ``esol.irn.stage.pseudo_label`` does.
    """
    t, walk, b = cfg["irn"]["train"], cfg["irn"]["random_walk"], cfg["model"]["backbone"]
    backbone = ResNetBackbone(b["depth"], pretrained="none", frozen_bn=b["frozen_bn"], frozen_stages=0)
    net = IRNet(IRNArch(depth=b["depth"], frozen_bn=b["frozen_bn"]), backbone=backbone).to(dev).train()
    edge, dp = net.branch_parameters()
    opt = torch.optim.SGD([{"params": edge}, {"params": dp}], lr=1e-6)
    bs, crop = t["batch_size"], t["crop"]
    index = pair_index((crop // 4, crop // 4), t["radius"])
    x = torch.randn(bs, 3, crop, crop, device=dev)
    gen = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (bs, crop // 4, crop // 4), generator=gen)
    label[torch.rand(label.shape, generator=gen) < 0.2] = IGNORE
    label = label.to(dev)

    def train_step():
        with autocast(dtype, dev):
            logits, disp = net(x)
        aff = path_affinity(torch.sigmoid(logits.float()), index)
        loss, _ = irn_loss(aff, disp.float(), index, relation_labels(label, index))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {"irn_train": bs / timed(train_step, warmup, reps)}
    net.eval()
    image = torch.randn(1, 3, *size, device=dev)
    h4, w4 = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    cams = torch.rand(classes_per_image, h4, w4, device=dev)
    keys = np.arange(1, classes_per_image + 1)

    def pseudo_label():
        with autocast(dtype, dev):
            boundary = net.boundary_map(image).float()
        walked = random_walk(cams, boundary, radius=walk["radius"], beta=walk["beta"],
                             exp_times=walk["exp_times"])
        walk_to_label(walked, keys, size, walk["bg_threshold"])

    out["irn_random_walk"] = 1 / timed(pseudo_label, 1, images)
    return out


def deeplab_stage(cfg: dict, size: tuple[int, int], classes: int, dtype, warmup: int, reps: int,
                  images: int, dev: torch.device = CUDA) -> dict[str, float]:
    """DeepLab-v2 training steps and multi-scale + flip prediction, the pipeline's modules.

    ``DeepLabV2`` as ``segmentation.model`` builds it (MSC outputs included), the loss of
    ``esol.segmentation.train``, crop and batch of ``segmentation.train``; prediction is
    ``multiscale_probs`` at ``segmentation.predict``'s scales on a ``size`` image (the
    CRF, on the CPU, is not timed).
    """
    seg = cfg["segmentation"]
    m, t, pr = seg["model"], seg["train"], seg["predict"]
    arch = DeepLabArch(num_classes=classes + 1, depth=m["depth"], frozen_bn=m["frozen_bn"],
                       rates=tuple(m["aspp_rates"]), msc_scales=tuple(m["msc_scales"]))
    net = DeepLabV2(arch).to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-6, momentum=0.9)
    bs, crop = t["batch_size"], t["crop"]
    x = torch.randn(bs, 3, crop, crop, device=dev)
    target = torch.randint(0, classes + 1, (bs, crop, crop), device=dev)

    def train_step():
        with autocast(dtype, dev):
            outputs = net.msc_logits(x)
        loss = segmentation_loss([o.float() for o in outputs], target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {"deeplab_train": bs / timed(train_step, warmup, reps)}
    net.eval()
    image = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)

    def predict():
        with torch.no_grad():
            multiscale_probs(net, image, pr["scales"], pr["flip"], dev, dtype).argmax(0).cpu()

    out["deeplab_predict"] = 1 / timed(predict, 2, images)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/voc12.yaml")
    ap.add_argument("--size", type=int, nargs=2, default=[375, 500], help="typical image H W")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--classes-per-image", type=int, default=2,
                    help="classes present in a typical image (VOC train 1.5, COCO 2.9): the walk's maps")
    ap.add_argument("--amp", nargs="+", default=["fp32", "bf16"], choices=list(AMP))
    ap.add_argument("--deform-impl", nargs="+", default=list(DEFORM_IMPLS), choices=DEFORM_IMPLS,
                    help="deformable-layer implementations to time; the first gives the hours")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10, help="timed training steps per stage")
    ap.add_argument("--images", type=int, default=10, help="timed images per inference stage")
    ap.add_argument("--out", default="benchmarks/out/gpu_measure.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_measure.py needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    cfg = yaml.safe_load(Path(args.config).read_text())
    size = tuple(args.size)
    d = cfg["dataset"]
    counts = d["expected_counts"]
    work = workload(cfg)
    n_methods = len(cfg["methods"])
    refined = len(cfg["refine"]["methods"])
    seg = cfg["segmentation"]
    deeplabs = len(seg["methods"]) + int(seg["supervised"])
    n_train = counts[d["train_split"]]
    irn_batch = cfg["irn"]["train"]["batch_size"]
    seg_batch = seg["train"]["batch_size"]
    images = {"classifier": work["classifier"], "expansion": work["expansion"],
              "shrinkage": work["shrinkage"],
              "make_cam_cam": counts[d["seed_split"]],
              "make_cam_esol": (n_methods - 1) * counts[d["seed_split"]],
              # per refined method: CAMs of the training split, IRN's epochs, one walk per image
              "irn_cam_train_split": refined * n_train,
              "irn_train": refined * cfg["irn"]["train"]["epochs"] * (n_train // irn_batch) * irn_batch,
              "irn_random_walk": refined * n_train,
              # per DeepLab (segmentation.methods, plus the supervised one when on)
              "deeplab_train": deeplabs * seg["train"]["epochs"] * (n_train // seg_batch) * seg_batch,
              "deeplab_predict": deeplabs * counts[seg["eval_split"]]}
    result = {"config": args.config, "device": torch.cuda.get_device_name(0),
              "deform_impls": args.deform_impl,
              "torch": torch.__version__, "image_size": list(size), "images": images, "modes": {}}
    for mode in args.amp:
        dtype = AMP[mode]
        ips = esol_stages(cfg, size, args.classes, dtype, args.warmup, args.reps, args.images,
                          impls=tuple(args.deform_impl))
        ips["irn_cam_train_split"] = ips["make_cam_esol"]
        ips.update(irn_stage(cfg, size, args.classes_per_image, dtype, args.warmup, args.reps, args.images))
        ips.update(deeplab_stage(cfg, size, args.classes, dtype, args.warmup, args.reps, args.images))
        hours = {k: images[k] / ips[k] / 3600 for k in images}
        result["modes"][mode] = {"images_per_s": ips, "hours": hours,
                                 "total_hours": sum(hours.values())}
        print(mode, json.dumps(result["modes"][mode], indent=1), flush=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
