"""Time the full-scale stages on a GPU and project each stage's hours from the config.

Not a test: it measures and writes figures to a JSON file (README, "How long each
stage takes"). Run it on a machine with a GPU:

    python benchmarks/gpu_measure.py --config configs/voc12.yaml --size 375 500 --classes 20 \
        --out benchmarks/out/gpu_measure_voc12.json

Measured with this project's code, on random tensors of the configured sizes (timing
does not depend on the pixel values): one optimiser step of the classifier, Expansion
and Shrinkage at the configured batch size and crop, and the multi-scale + flip CAM of
one image (``--size``, the dataset's typical image) for the baseline and the ESOL
network. Each is timed under every ``--amp`` mode (fp32: full precision, TF32 off as
PyTorch's default; bf16: autocast as ``amp: auto`` gives on a recent GPU).

The later stages live in other modules of the pipeline; they are timed here on proxies
that do the same heavy arithmetic, and are labelled ``proxy`` in the output:

* ``irn_train``: IRN's ResNet-50 (strides 2,2,2,1) forward without gradient at crop 512,
  batch 32, plus trainable 1x1 branches on every level, upsampled to stride 4 (IRN's
  edge and displacement branches are of this kind and small next to the backbone);
* ``irn_random_walk``: IRN's ``to_transition_matrix``: a dense (HW/16) x (HW/16)
  transition matrix squared ``exp_times`` (8) times, the cost that dominates
  ``make_sem_seg_labels``, plus one flipped ResNet-50 forward at full size;
* ``deeplab_train``: DeepLab-v2: torchvision's ResNet-101 at output stride 8 with ASPP
  (four dilated 3x3 convolutions, rates 6/12/18/24), MSC training (scales 1, 0.75, 0.5,
  pixel-wise max, a loss on each), crop 321, batch 10 (deeplab-pytorch's 5 x iter_size 2);
* ``deeplab_predict``: the same network, without MSC, over 5 scales x flip at ``--size``.

Hours = images processed by the stage under the config (``gpu_estimate.workload``,
the deeplab-pytorch iteration counts for DeepLab) / measured images per second. Data
loading, checkpointing, HDF5 writes and CRF (on the CPU) are not included.
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
import torch.nn.functional as F
import torchvision
import yaml

from esol.cam import multiscale_cam
from esol.losses import classification_loss
from esol.stages import build_classifier, expansion_objective, shrinkage_objective
from esol.utils import autocast
from gpu_estimate import workload

AMP = {"fp32": None, "bf16": torch.bfloat16}
# deeplab-pytorch: iterations x batch (5 x iter_size 2); paper Table 3 / 2 evaluation sets.
DEEPLAB = {"voc": {"iterations": 20000, "batch": 10, "eval_images": 1449},
           "coco": {"iterations": 100000, "batch": 10, "eval_images": 40504}}


def timed(fn: Callable[[], None], warmup: int, reps: int) -> float:
    """Seconds per call of ``fn`` (CUDA synchronised), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def esol_stages(cfg: dict, size: tuple[int, int], classes: int, dtype, warmup: int, reps: int,
                cam_images: int) -> dict[str, float]:
    """Images per second of the classifier, Expansion, Shrinkage steps and of make_cam."""
    dev = torch.device("cuda")
    cfg = copy.deepcopy(cfg)
    cfg["model"]["backbone"].update(pretrained="none", frozen_bn=False)  # as gpu_estimate.py
    bs, crop = cfg["classifier"]["batch_size"], cfg["classifier"]["crop"]
    x = torch.randn(bs, 3, crop, crop, device=dev)
    y = (torch.rand(bs, classes, device=dev) < 0.1).float()
    y[:, 0] = 1
    net = build_classifier(cfg, classes).to(dev).train()

    def stepper(objective, params):
        opt = torch.optim.SGD(params, lr=1e-6)

        def step():
            with autocast(dtype, dev):
                maps = net.class_maps(x)
                loss, _ = objective(maps.float().mean((2, 3)), maps.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    out = {"classifier": bs / timed(stepper(lambda lg, m, t: (classification_loss(lg, t), {}),
                                            net.parameters()), warmup, reps)}
    net.eval()
    params = net.to_expansion(True, cfg["expansion"]["clip_beta"])
    out["expansion"] = bs / timed(stepper(expansion_objective(cfg["expansion"]["alpha"]), params),
                                  warmup, reps)
    params = net.to_shrinkage(True)
    out["shrinkage"] = bs / timed(stepper(shrinkage_objective(cfg["shrinkage"]["gamma"],
                                                              cfg["shrinkage"]["mu"]), params),
                                  warmup, reps)
    image = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    baseline = build_classifier(cfg, classes).to(dev).eval()
    for name, model in (("make_cam_cam", baseline), ("make_cam_esol", net)):
        def cam(model=model):
            with torch.no_grad():
                multiscale_cam(model, image, cfg["cam"]["scales"], cfg["cam"]["flip"], dev, dtype)
        out[name] = 1 / timed(cam, 2, cam_images)
    return out


def resnet(depth: int, dilation: list[bool]) -> torch.nn.Module:
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None,
                                                         replace_stride_with_dilation=dilation)
    return torch.nn.Sequential(*list(net.children())[:-2])


def levels(body: torch.nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for i, m in enumerate(body):
        x = m(x)
        if i >= 4:  # layer1..layer4
            out.append(x)
    return out


def irn_proxy(size: tuple[int, int], dtype, warmup: int, reps: int, irn_images: int) -> dict[str, float]:
    dev = torch.device("cuda")
    body = resnet(50, [False, False, True]).to(dev).eval()  # IRN: strides (2, 2, 2, 1)
    heads = torch.nn.ModuleList(torch.nn.Conv2d(c, 64, 1) for c in (256, 512, 1024, 2048)).to(dev)
    fuse = torch.nn.Conv2d(256, 3, 1).to(dev)  # 1 edge + 2 displacement channels
    opt = torch.optim.SGD([*heads.parameters(), *fuse.parameters()], lr=1e-6)
    bs, crop = 32, 512
    x = torch.randn(bs, 3, crop, crop, device=dev)

    def train_step():
        with autocast(dtype, dev):
            with torch.no_grad():
                feats = levels(body, x)
            s4 = feats[0].shape[-2:]
            y = torch.cat([F.interpolate(h(f), s4, mode="bilinear", align_corners=False)
                           for h, f in zip(heads, feats, strict=True)], 1)
            loss = fuse(y).float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {"irn_train": bs / timed(train_step, warmup, reps)}
    h4, w4 = math.ceil(size[0] / 4), math.ceil(size[1] / 4)
    n = h4 * w4
    image = torch.randn(2, 3, *size, device=dev)
    trans = torch.softmax(torch.randn(n, n, device=dev), 1)

    def random_walk():
        with torch.no_grad():
            with autocast(dtype, dev):
                levels(body, image)
            t = trans
            for _ in range(8):  # IRN to_transition_matrix: exp_times squarings, float32
                t = t @ t
            (torch.randn(21, n, device=dev) @ t).sum().item()

    out["irn_random_walk"] = 1 / timed(random_walk, 1, irn_images)
    out["irn_random_walk_n"] = n
    return out


class DeepLabV2(torch.nn.Module):
    """ResNet-101 at output stride 8 + ASPP (sum of four dilated 3x3 convolutions)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.body = resnet(101, [False, True, True])
        self.aspp = torch.nn.ModuleList(torch.nn.Conv2d(2048, classes, 3, padding=r, dilation=r)
                                        for r in (6, 12, 18, 24))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x)
        return sum(a(f) for a in self.aspp)


def deeplab_proxy(size: tuple[int, int], classes: int, dtype, warmup: int, reps: int,
                  images: int) -> dict[str, float]:
    dev = torch.device("cuda")
    net = DeepLabV2(classes + 1).to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-6, momentum=0.9)
    bs, crop = 10, 321
    x = torch.randn(bs, 3, crop, crop, device=dev)
    target = torch.randint(0, classes + 1, (bs, crop, crop), device=dev)

    def train_step():
        with autocast(dtype, dev):
            logits = [net(x)] + [net(F.interpolate(x, scale_factor=s, mode="bilinear",
                                                   align_corners=False)) for s in (0.75, 0.5)]
            s = logits[0].shape[-2:]
            logits = [F.interpolate(z, s, mode="bilinear", align_corners=False) for z in logits]
            logits.append(torch.stack(logits).max(0).values)
            loss = sum(F.cross_entropy(F.interpolate(z.float(), (crop, crop), mode="bilinear",
                                                     align_corners=False), target, ignore_index=255)
                       for z in logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {"deeplab_train": bs / timed(train_step, warmup, reps)}
    net.eval()
    image = torch.randn(1, 3, *size, device=dev)

    def predict():
        with torch.no_grad(), autocast(dtype, dev):
            for s in (0.5, 0.75, 1.0, 1.25, 1.5):
                z = F.interpolate(image, scale_factor=s, mode="bilinear", align_corners=False)
                net(torch.cat([z, z.flip(-1)])).float().sum().item()

    out["deeplab_predict"] = 1 / timed(predict, 2, images)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/voc12.yaml")
    ap.add_argument("--size", type=int, nargs=2, default=[375, 500], help="typical image H W")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--amp", nargs="+", default=["fp32", "bf16"], choices=list(AMP))
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
    kind = "coco" if d["source"] == "coco" else "voc"
    counts = d["expected_counts"]
    work = workload(cfg)
    n_methods = len(cfg["methods"])
    refined = 2  # refine.methods: [cam, esol] in both full-scale configs
    images = {"classifier": work["classifier"], "expansion": work["expansion"],
              "shrinkage": work["shrinkage"],
              "make_cam_cam": counts[d["seed_split"]], "make_cam_esol": (n_methods - 1) * counts[d["seed_split"]],
              # IRN: 3 epochs at batch 32 over train_aug / train2014, per refined method
              "irn_train": refined * 3 * (counts[d["train_split"]] // 32) * 32,
              # CAMs of the training set and random walk over it, per refined method
              "irn_cam_train_split": refined * counts[d["train_split"]],
              "irn_random_walk": refined * counts[d["train_split"]],
              "deeplab_train": refined * DEEPLAB[kind]["iterations"] * DEEPLAB[kind]["batch"],
              "deeplab_predict": refined * DEEPLAB[kind]["eval_images"]}
    result = {"config": args.config, "device": torch.cuda.get_device_name(0),
              "torch": torch.__version__, "image_size": list(size), "images": images, "modes": {}}
    for mode in args.amp:
        dtype = AMP[mode]
        ips = esol_stages(cfg, size, args.classes, dtype, args.warmup, args.reps, args.images)
        ips["irn_cam_train_split"] = ips["make_cam_esol"]
        ips.update(irn_proxy(size, dtype, args.warmup, args.reps, max(2, args.images // 3)))
        ips.update(deeplab_proxy(size, args.classes, dtype, args.warmup, args.reps, args.images))
        n = ips.pop("irn_random_walk_n")
        hours = {k: images[k] / ips[k] / 3600 for k in images}
        result["modes"][mode] = {"images_per_s": ips, "hours": hours,
                                 "total_hours": sum(hours.values()),
                                 "random_walk_matrix_side": n}
        print(mode, json.dumps(result["modes"][mode], indent=1), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
