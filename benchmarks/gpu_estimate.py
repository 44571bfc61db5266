"""GPU hours of each full-scale stage, estimated from counted floating-point operations.

Not a test, and not a measurement on a GPU: it counts the FLOPs of one training image
(classifier, Expansion, Shrinkage steps at the configured crop) and of one multi-scale
CAM (configured scales and flip, at a typical image size) on the CPU, multiplies by the
images each stage processes under the config (epochs x training images; methods x seed
images), and divides by sustained GPU throughputs given on the command line.

    python benchmarks/gpu_estimate.py --config config/voc12.yaml --size 375 500 \
        --out benchmarks/out/gpu_estimate_voc12.json

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add),
plus the deformable samplers, which the counter does not see: their GEMM is the
regular convolution's, counted analytically (forward, and once more for the input
gradient of the sampler that learns). The network is built without pretrained weights
and with trainable BatchNorm (same convolutions; frozen BN only saves a few element-wise
operations). Data loading, checkpointing and CAM storage are not counted.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from esol.cam import multiscale_cam
from esol.evaluate import write_json
from esol.losses import classification_loss
from esol.models.deform import DeformableSampler
from esol.stages import build_classifier, expansion_objective, shrinkage_objective


class SamplerFlops:
    """Analytic GEMM FLOPs of every DeformableSampler call (the counter skips deform_conv2d)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.flops = 0
        self.handles = [m.register_forward_hook(self._hook) for m in net.modules()
                        if isinstance(m, DeformableSampler)]

    def _hook(self, module: DeformableSampler, inputs, output) -> None:
        c_out, c_in, kh, kw = module.weight.shape
        gemm = 2 * c_in * c_out * kh * kw * output.shape[0] * output.shape[2] * output.shape[3]
        learns = module.offset.weight.requires_grad and torch.is_grad_enabled()
        self.flops += gemm * (2 if learns else 1)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def count(net: torch.nn.Module, fn) -> int:
    samplers = SamplerFlops(net)
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    samplers.close()
    return counter.get_total_flops() + samplers.flops


def per_image_flops(cfg: dict, size: tuple[int, int], num_classes: int) -> dict[str, float]:
    cfg = copy.deepcopy(cfg)
    cfg["model"]["backbone"].update(pretrained="none", frozen_bn=False)
    crop = cfg["classifier"]["crop"]
    x = torch.randn(2, 3, crop, crop)
    y = torch.zeros(2, num_classes)
    y[:, 0] = 1
    net = build_classifier(cfg, num_classes).train()

    def step(objective):
        def run():
            maps = net.class_maps(x)
            loss, _ = objective(maps.mean((2, 3)), maps, y)
            loss.backward()
        return run

    out = {"classifier": count(net, step(lambda lg, m, t: (classification_loss(lg, t), {}))) / 2}
    net.eval()
    net.to_expansion(True, cfg["expansion"]["clip_beta"])
    out["expansion"] = count(net, step(expansion_objective(cfg["expansion"]["alpha"]))) / 2
    net.to_shrinkage(True)
    out["shrinkage"] = count(net, step(shrinkage_objective(1.0, 1.0))) / 2
    image = np.zeros((*size, 3), np.uint8)
    with torch.no_grad():
        out["make_cam"] = count(net, lambda: multiscale_cam(net, image, cfg["cam"]["scales"],
                                                            cfg["cam"]["flip"]))
    return out


def workload(cfg: dict) -> dict[str, float]:
    """Images each stage processes, from the config (expected counts of its splits)."""
    d, counts = cfg["dataset"], cfg["dataset"]["expected_counts"]
    n_train, n_seed = counts[d["train_split"]], counts[d["seed_split"]]
    methods = cfg["methods"].values()
    expansions = {m["clipping"] for m in methods if m["expansion_offsets"]}
    shrinkages = sum(1 for m in methods if m["shrinkage"])
    batch = cfg["classifier"]["batch_size"]
    steps = lambda epochs: epochs * math.floor(n_train / batch)  # noqa: E731 (drop_last)
    return {"classifier": steps(cfg["classifier"]["epochs"]) * batch,
            "expansion": len(expansions) * steps(cfg["expansion"]["epochs"]) * cfg["expansion"]["batch_size"],
            "shrinkage": shrinkages * steps(cfg["shrinkage"]["epochs"]) * cfg["shrinkage"]["batch_size"],
            "make_cam": len(cfg["methods"]) * n_seed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/voc12.yaml")
    ap.add_argument("--size", type=int, nargs=2, default=[375, 500], help="typical image H W for CAMs")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--tflops", type=float, nargs="+", default=[7.0, 20.0],
                    help="sustained GPU throughputs to convert to hours (TFLOP/s)")
    ap.add_argument("--out", default="benchmarks/out/gpu_estimate.json")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(Path(args.config).read_text())
    flops = per_image_flops(cfg, tuple(args.size), args.classes)
    images = workload(cfg)
    stages = {}
    for stage, f in flops.items():
        total = f * images[stage]
        stages[stage] = {"gflop_per_image": f / 1e9, "images": images[stage], "pflop": total / 1e15,
                         "hours": {str(t): total / (t * 1e12) / 3600 for t in args.tflops}}
    result = {"config": args.config, "image_size": args.size, "stages": stages,
              "total_hours": {str(t): sum(s["hours"][str(t)] for s in stages.values())
                              for t in args.tflops}}
    write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
