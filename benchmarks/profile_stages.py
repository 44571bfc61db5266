"""Where the time of one Expansion and one Shrinkage step goes (docs/performance.md).

Not a test: it times the parts of a step of the sampler stages on random images at the
configured batch size and crop, for each implementation of the deformable layer:

    python benchmarks/profile_stages.py [--config config.yaml] [--reps 3]

The forward is split by hand into the pieces ``ESOLNet.features`` runs (backbone under
``no_grad``, offset branch, deformable sampling, ReLU + clipping, ``conv_s``, classifier
and loss); the backward is timed whole and split by operator with ``torch.profiler``
(the operators with the most self CPU time). Each figure is the median over ``--reps`` steps;
the implementations alternate step by step in one process, so a busy shared CPU slows
both alike. A classifier step (forward + backward + SGD) is timed in the same loop as
the yardstick.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.profiler import ProfilerActivity, profile

from esol.losses import area_loss, classification_loss
from esol.models.deform import DEFORM_IMPLS, feature_clip
from esol.stages import build_classifier

CLOCK = time.perf_counter  # --clock cpu: time.process_time


def _sampler_parts(sampler, x: torch.Tensor, t: dict[str, float], name: str) -> torch.Tensor:
    """``sampler(x)`` with its offset branch and its sampling + GEMM timed apart."""
    from esol.models.deform import deform_conv2d_sampled
    from torchvision.ops import deform_conv2d

    start = CLOCK()
    offset = sampler.offset(x)
    t[f"{name} offset branch"] += CLOCK() - start
    start = CLOCK()
    fn = deform_conv2d_sampled if sampler.impl == "sampled" else deform_conv2d
    out = fn(x, offset, sampler.weight, sampler.bias, stride=sampler.stride,
             padding=sampler.padding, dilation=sampler.dilation)
    t[f"{name} deformable conv"] += CLOCK() - start
    return out


def esol_step(net, x, y, stage: str, clip_beta: float) -> dict[str, float]:
    """One step of ``stage`` ('expansion' or 'shrinkage'), seconds per part."""
    t: dict[str, float] = defaultdict(float)
    with torch.no_grad():
        start = CLOCK()
        f = net.backbone(x)
        t["backbone forward (no_grad)"] += CLOCK() - start
    with torch.set_grad_enabled(stage == "expansion"):
        e = _sampler_parts(net.conv_e, f, t, "ES")
        start = CLOCK()
        e = feature_clip(F.relu(e), clip_beta)
        t["ReLU + clip"] += CLOCK() - start
    start = CLOCK()
    if stage == "shrinkage":
        s = _sampler_parts(net.conv_s, e, t, "SS")
    else:
        s = net.conv_s(e)
        t["conv_s forward"] += CLOCK() - start
    start = CLOCK()
    maps = F.conv2d(F.relu(s), net.classifier.weight)
    logits = maps.mean((2, 3))
    loss = classification_loss(logits, y)
    if stage == "shrinkage":
        loss = loss + area_loss(maps, y)
    else:
        loss = -0.01 * loss
    t["classifier + loss"] += CLOCK() - start
    start = CLOCK()
    loss.backward()
    t["backward (all)"] += CLOCK() - start
    return t


def top_ops(net, x, y, stage: str, clip_beta: float) -> dict[str, float]:
    """Self CPU seconds of the 10 costliest operators of one step (torch.profiler)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        esol_step(net, x, y, stage, clip_beta)
    out = {ev.key: ev.self_cpu_time_total / 1e6 for ev in prof.key_averages()}
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:10])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: this process's CPU seconds (on a shared CPU, with --threads 1)")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(Path(args.config).read_text())
    torch.manual_seed(0)
    bs, crop, classes = cfg["classifier"]["batch_size"], cfg["classifier"]["crop"], 4
    x = torch.randn(bs, 3, crop, crop)
    y = (torch.rand(bs, classes) < 0.4).float()
    y[:, 0] = 1
    clip_beta = cfg["expansion"]["clip_beta"]
    clf = build_classifier(cfg, classes).train()
    opt = torch.optim.SGD(clf.parameters(), lr=1e-6)
    nets = {}
    for impl in DEFORM_IMPLS:
        net = build_classifier(cfg, classes).eval().set_deform_impl(impl)
        net.load_state_dict(clf.state_dict())
        net.to_expansion(True, clip_beta)
        exp = {"net": net}
        net2 = build_classifier(cfg, classes).eval().set_deform_impl(impl)
        net2.load_state_dict(clf.state_dict())
        net2.to_expansion(True, clip_beta)
        net2.to_shrinkage(True)
        nets[impl] = {"expansion": net, "shrinkage": net2}
    runs: dict = defaultdict(list)
    for rep in range(args.reps + 1):  # the first round warms up
        start = CLOCK()
        loss = classification_loss(clf(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rep:
            runs["classifier step"].append({"total": CLOCK() - start})
        for impl in DEFORM_IMPLS:
            for stage in ("expansion", "shrinkage"):
                t = esol_step(nets[impl][stage], x, y, stage, clip_beta)
                t["total"] = sum(t.values())
                if rep:
                    runs[f"{stage} step, {impl}"].append(t)
    clf_s = statistics.median(r["total"] for r in runs["classifier step"])
    print(f"batch {bs}, crop {crop}, ResNet-{cfg['model']['backbone']['depth']}, "
          f"{torch.get_num_threads()} threads; median of {args.reps} steps, {args.clock} seconds")
    print(f"classifier step: {clf_s:.3f}")
    for key, rs in runs.items():
        if key == "classifier step":
            continue
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"\n{key}: {med['total']:.3f} s = {med['total'] / clf_s:.2f} classifier steps")
        for k, v in med.items():
            if k != "total":
                print(f"  {k:32s} {v:7.3f}  ({100 * v / med['total']:4.1f} %)")
    for impl in DEFORM_IMPLS:
        for stage in ("expansion", "shrinkage"):
            ops = top_ops(nets[impl][stage], x, y, stage, clip_beta)
            print(f"\none {stage} step, {impl}: the 10 operators with most self CPU seconds")
            for k, v in ops.items():
                print(f"  {k:48s} {v:7.3f}")


if __name__ == "__main__":
    main()
