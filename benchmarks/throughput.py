"""Throughput of the train steps and of CAM extraction on the embedded synthetic data.

Not a test: it measures and writes figures to a JSON file (README, "Benchmarks";
docs/performance.md).

    python benchmarks/throughput.py --out benchmarks/out/throughput.json [--config config/config.yaml]

For each stage (classifier, expansion, shrinkage) it times optimiser steps at the
configured batch size and crop and reports images/s, the step time as a fraction of a
classifier step, and the GFLOP/s achieved. The Expansion and Shrinkage stages and the
ESOL network's CAM extraction are timed for each implementation of the deformable
layer (``torchvision``: ``torchvision.ops.deform_conv2d``; ``sampled``: sampling + one
GEMM, ``esol.models.deform.deform_conv2d_sampled``) in the same process.

The CPU this runs on may be shared: every figure is the median of ``--rounds`` rounds,
and within a round the classifier and both implementations are timed one after the
other, so a slow spell hits them alike. On a heavily shared CPU, ``--threads 1
--clock cpu`` times this process's CPU seconds instead of elapsed ones.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (forward +
backward) on the ``sampled`` implementation, whose deformable layer is a matmul
the counter sees (its bilinear interpolation, a few operations per sample, is not
counted); the same count is used for the ``torchvision`` timing, since that operator
does the same arithmetic and is invisible to the counter.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
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
from esol.models.deform import DEFORM_IMPLS
from esol.stages import build_classifier, expansion_objective, shrinkage_objective
from esol.utils import amp_dtype, autocast, select_device
from machine import cpu_name


def _step_fn(net, objective, optimizer, amp, device):
    def step(batch):
        with autocast(amp, device):
            maps = net.class_maps(batch["img"])
            loss, _ = objective(maps.float().mean((2, 3)), maps.float(), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, items, device, clock) -> float:
    """Seconds to run ``fn`` over ``items`` on ``clock`` (``time.perf_counter`` or
    ``time.process_time``)."""
    _sync(device)
    start = clock()
    for item in items:
        fn(item)
    _sync(device)
    return clock() - start


def _flops(fn, item) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn(item)
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--out", default="benchmarks/out/throughput.json")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per stage and round")
    ap.add_argument("--images", type=int, default=6, help="images timed for CAM extraction per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; figures are their medians")
    ap.add_argument("--amp", choices=["fp32", "config"], default="fp32",
                    help="fp32 (default), or the config's amp setting (bf16 on the demo)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time, which a CPU shared "
                         "with other jobs inflates much less (use with --threads 1: several "
                         "threads also count their spin-waiting)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(Path(args.config).read_text())
    device = select_device(cfg["device"])
    amp = amp_dtype(cfg["amp"], device) if args.amp == "config" else None
    syn = dict(cfg["dataset"]["synthetic"])
    bs = cfg["classifier"]["batch_size"]
    syn["counts"] = {"train_aug": bs * (args.steps + 1), "train": args.images + 1, "val": 1, "test": 0}
    results: dict = {"config": args.config, "device": str(device), "threads": args.threads,
                     "torch": torch.__version__, "cpu": cpu_name(), "amp": str(amp),
                     "batch_size": bs, "crop": cfg["classifier"]["crop"],
                     "rounds": args.rounds, "steps_per_round": args.steps,
                     "cam_images_per_round": args.images, "statistic": "median over rounds",
                     "clock": args.clock}
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    with tempfile.TemporaryDirectory() as tmp:
        names = synthetic.generate(tmp, syn, seed=cfg["seed"])
        info = prepare_dataset(tmp, names, ["train_aug", "train"])
        ds = ClassificationDataset(info, "train_aug", cfg["classifier"]["resize_long"],
                                   cfg["classifier"]["crop"], seed=0)
        batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}
                   for b in DataLoader(ds, batch_size=bs, drop_last=True)]
        warm, timed = batches[0], batches[1:]
        clf = build_classifier(cfg, info.num_classes).to(device).train()
        steps = {"classifier": _step_fn(clf, lambda lg, maps, y: (classification_loss(lg, y), {}),
                                        torch.optim.SGD(clf.parameters(), lr=1e-4, momentum=0.9),
                                        amp, device)}
        esol_nets = {}
        for impl in DEFORM_IMPLS:
            net = copy.deepcopy(clf).eval().set_deform_impl(impl)
            params = net.to_expansion(True, cfg["expansion"]["clip_beta"])
            steps[f"expansion/{impl}"] = _step_fn(
                net, expansion_objective(cfg["expansion"]["alpha"]), torch.optim.SGD(params, lr=1e-6),
                amp, device)
            net = copy.deepcopy(net)
            params = net.to_shrinkage(True)
            steps[f"shrinkage/{impl}"] = _step_fn(
                net, shrinkage_objective(cfg["shrinkage"]["gamma"], cfg["shrinkage"]["mu"]),
                torch.optim.SGD(params, lr=1e-6), amp, device)
            esol_nets[impl] = net
        images = [read_image(info.layout.image(i)) for i in info.ids("train")]
        cam_net = copy.deepcopy(clf).eval()

        def cam_fn(model):
            def run(img):
                multiscale_cam(model, img, cfg["cam"]["scales"], cfg["cam"]["flip"], device, amp)
            return run

        cams = {"make_cam/cam": cam_fn(cam_net),
                **{f"make_cam/esol/{impl}": cam_fn(esol_nets[impl]) for impl in DEFORM_IMPLS}}
        flops = {name: _flops(fn, warm) for name, fn in steps.items() if "torchvision" not in name}
        flops.update({name: _flops(fn, images[0]) for name, fn in cams.items()
                      if "torchvision" not in name})
        secs: dict[str, list[float]] = {name: [] for name in (*steps, *cams)}
        for fn in steps.values():
            fn(warm)
        for fn in cams.values():
            fn(images[0])
        for r in range(args.rounds):
            for name, fn in steps.items():
                secs[name].append(_time(fn, timed, device, clock) / len(timed))
            for name, fn in cams.items():
                secs[name].append(_time(fn, images[1:], device, clock) / len(images[1:]))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.3f} s"
                                                           for k, v in secs.items()),
                  file=sys.stderr, flush=True)
    clf_step = statistics.median(secs["classifier"])
    out: dict = {}
    for name, runs in secs.items():
        per_item = statistics.median(runs)
        work = flops[name.replace("torchvision", "sampled")]
        rec = {"seconds_per_item": per_item, "runs_seconds_per_item": runs,
               "gflop_per_item": work / 1e9, "achieved_gflop_per_s": work / 1e9 / per_item}
        if name.startswith("make_cam"):
            rec["images_per_s"] = 1 / per_item
            rec.update(scales=cfg["cam"]["scales"], flip=cfg["cam"]["flip"])
        else:
            rec["images_per_s"] = bs / per_item
            rec["fraction_of_classifier_step"] = per_item / clf_step
        out[name] = rec
    results["stages"] = out
    write_json(args.out, results)
    print(json.dumps(results, indent=1))
    for name, rec in out.items():
        frac = rec.get("fraction_of_classifier_step")
        print(f"{name:28s} {rec['images_per_s']:7.2f} img/s  "
              f"{'' if frac is None else f'{frac:5.2f} of a classifier step'}  "
              f"{rec['achieved_gflop_per_s']:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
