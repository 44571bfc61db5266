"""Step time of the classifier under DDP (2 gloo processes) vs one process, on the CPU.

Not a test: it measures and writes figures to a JSON file (docs/cluster.md, "Measured
here"):

    python benchmarks/ddp_step.py --out benchmarks/out/ddp_step.json

The classifier of config/config.yaml (the demo's from-scratch ResNet at its crop and
global batch) steps on random tensors: one process with the whole batch and all the
torch threads, then ``--processes`` workers started by ``esol.distributed.launch``
(torch's elastic launch, gloo) with ``batch / processes`` each, the torch threads split
between them, gradients averaged by ``esol.distributed.average_gradients`` as the
training rules do. Reported: seconds per global step (median over the timed steps,
rank 0's clock, after a barrier) and the part spent in the gradient all-reduce.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import yaml

from esol import distributed
from esol.losses import classification_loss
from esol.stages import build_classifier

REPO = Path(__file__).resolve().parents[1]


def time_steps(cfg: dict, classes: int, global_batch: int, warmup: int, reps: int) -> dict:
    """Seconds per global step (and per all-reduce) in this process, a worker or the only one."""
    distributed.init_from_env("cpu")
    world = distributed.world_size()
    torch.manual_seed(0)
    net = build_classifier(cfg, classes).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    crop = cfg["classifier"]["crop"]
    gen = torch.Generator().manual_seed(distributed.rank())
    x = torch.randn(global_batch // world, 3, crop, crop, generator=gen)
    y = (torch.rand(global_batch // world, classes, generator=gen) < 0.3).float()
    steps, reduces = [], []
    for i in range(warmup + reps):
        distributed.barrier()
        t0 = time.perf_counter()
        maps = net.class_maps(x)
        loss = classification_loss(maps.mean((2, 3)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        distributed.average_gradients(net.parameters())
        t2 = time.perf_counter()
        opt.step()
        distributed.barrier()
        if i >= warmup:
            steps.append(time.perf_counter() - t0)
            reduces.append(t2 - t1)
    return {"processes": world, "batch_per_process": global_batch // world,
            "threads_per_process": torch.get_num_threads(),
            "seconds_per_step": statistics.median(steps), "steps": steps,
            "allreduce_seconds": statistics.median(reduces)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="global batch (config's by default)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/out/ddp_step.json")
    args = ap.parse_args()
    cfg = copy.deepcopy(yaml.safe_load(Path(args.config).read_text()))
    cfg["model"]["backbone"]["pretrained"] = "none"
    classes = cfg["dataset"].get("synthetic", {}).get("num_classes", 20)
    batch = args.batch or cfg["classifier"]["batch_size"]
    torch.set_num_threads(args.threads)
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "torch": torch.__version__, "config": args.config, "global_batch": batch,
              "crop": cfg["classifier"]["crop"], "depth": cfg["model"]["backbone"]["depth"],
              "load_average_before": os.getloadavg()}
    result["one_process"] = time_steps(cfg, classes, batch, args.warmup, args.reps)
    result["ddp"] = distributed.launch(time_steps, args.processes, cfg, classes, batch,
                                       args.warmup, args.reps)
    result["load_average_after"] = os.getloadavg()
    result["ddp_over_one"] = (result["ddp"]["seconds_per_step"]
                              / result["one_process"]["seconds_per_step"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("one_process", "ddp")}
                     | {"one_s": result["one_process"]["seconds_per_step"],
                        "ddp_s": result["ddp"]["seconds_per_step"],
                        "allreduce_s": result["ddp"]["allreduce_seconds"]}, indent=1))


if __name__ == "__main__":
    main()
