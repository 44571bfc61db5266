"""Throughput of the train steps and of CAM extraction on the embedded synthetic data.

Not a test: it measures and writes figures to a JSON file (README, "Benchmarks").

    python benchmarks/throughput.py --out benchmarks/out/throughput.json [--config config/config.yaml]

For each stage (classifier, expansion, shrinkage) it times optimiser steps at the
configured batch size and crop, and counts the step's floating-point operations with
``torch.utils.flop_counter.FlopCounterMode`` (forward + backward; torchvision's
``deform_conv2d`` is a custom operator the counter does not see, so the ESOL stages'
GFLOP/s are lower bounds). CAM extraction is timed per image with the configured
scales and flip, for the baseline and for the full ESOL network.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from esol.cam import multiscale_cam
from esol.data import synthetic
from esol.data.datasets import ClassificationDataset
from esol.data.voc import prepare_dataset, read_image
from esol.evaluate import write_json
from esol.losses import classification_loss
from esol.stages import build_classifier, expansion_objective, shrinkage_objective
from esol.utils import select_device
from machine import cpu_name


def _step_fn(net, objective, optimizer):
    def step(batch):
        maps = net.class_maps(batch["img"])
        loss, _ = objective(maps.mean((2, 3)), maps, batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def _time_steps(step, batches, warmup: int, device) -> float:
    for b in batches[:warmup]:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for b in batches[warmup:]:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _flops(step, batch) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step(batch)
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--out", default="benchmarks/out/throughput.json")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per stage (after 2 warm-up)")
    ap.add_argument("--images", type=int, default=12, help="images timed for CAM extraction")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(Path(args.config).read_text())
    device = select_device(cfg["device"])
    syn = dict(cfg["dataset"]["synthetic"])
    bs = cfg["classifier"]["batch_size"]
    n_train = bs * (args.steps + 2)
    syn["counts"] = {"train_aug": n_train, "train": args.images, "val": 1, "test": 0}
    results: dict = {"config": args.config, "device": str(device), "threads": args.threads,
                     "torch": torch.__version__, "cpu": cpu_name(),
                     "batch_size": bs, "crop": cfg["classifier"]["crop"], "stages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        names = synthetic.generate(tmp, syn, seed=cfg["seed"])
        info = prepare_dataset(tmp, names, ["train_aug", "train"])
        ds = ClassificationDataset(info, "train_aug", cfg["classifier"]["resize_long"],
                                   cfg["classifier"]["crop"], seed=0)
        batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}
                   for b in DataLoader(ds, batch_size=bs, drop_last=True)]
        net = build_classifier(cfg, info.num_classes).to(device).train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
        step = _step_fn(net, lambda lg, maps, y: (classification_loss(lg, y), {}), opt)
        results["stages"]["classifier"] = _record(_flops(step, batches[0]),
                                                  _time_steps(step, batches, 2, device), args.steps, bs)
        net.eval()
        params = net.to_expansion(True, cfg["expansion"]["clip_beta"])
        step = _step_fn(net, expansion_objective(cfg["expansion"]["alpha"]),
                        torch.optim.SGD(params, lr=1e-6))
        results["stages"]["expansion"] = _record(_flops(step, batches[0]),
                                                 _time_steps(step, batches, 2, device), args.steps, bs)
        params = net.to_shrinkage(True)
        step = _step_fn(net, shrinkage_objective(1.0, 1.0), torch.optim.SGD(params, lr=1e-6))
        results["stages"]["shrinkage"] = _record(_flops(step, batches[0]),
                                                 _time_steps(step, batches, 2, device), args.steps, bs)
        images = [read_image(info.layout.image(i)) for i in info.ids("train")]
        cam_net = build_classifier(cfg, info.num_classes).to(device).eval()
        for name, model in (("cam", cam_net), ("esol", net)):
            multiscale_cam(model, images[0], cfg["cam"]["scales"], cfg["cam"]["flip"], device)
            start = time.perf_counter()
            for img in images:
                multiscale_cam(model, img, cfg["cam"]["scales"], cfg["cam"]["flip"], device)
            secs = time.perf_counter() - start
            results[f"make_cam_{name}"] = {"images_per_s": len(images) / secs,
                                           "scales": cfg["cam"]["scales"], "flip": cfg["cam"]["flip"]}
    write_json(args.out, results)
    print(json.dumps(results, indent=1))


def _record(step_flops: int, secs: float, steps: int, batch: int) -> dict:
    """Images per second, and GFLOP/s achieved: one step's counted FLOPs per step time."""
    return {"images_per_s": steps * batch / secs, "step_gflop": step_flops / 1e9,
            "achieved_gflop_per_s": step_flops / 1e9 / (secs / steps)}


if __name__ == "__main__":
    main()
