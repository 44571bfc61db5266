"""Memory and time of the GPU-capable rules' work, the figures behind resources.smk.

Not a test: it measures and writes figures to a JSON file (README, "Resources").

    python benchmarks/rule_resources.py --out benchmarks/out/rule_resources.json

Each case runs in a fresh Python process (so that peak resident memory is the case's
own) on random inputs: ``train`` is classifier steps (forward + backward + SGD) at a
batch size and crop, ``cam`` is CAM extraction forwards (no gradient, an image and its
flip) at an image side. For each it records the peak RSS after building the network
(the process's fixed cost) and after the steps, and seconds per image (per image-step
for ``train``), on the device the config selects. resources.smk turns these into
per-rule defaults: fixed cost + activation bytes per pixel, seconds per pixel.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

from esol.evaluate import write_json

CASES = [
    # kind, depth, batch (train) or 1 (cam), side in pixels
    ("train", 18, 8, 160), ("train", 18, 8, 320), ("train", 50, 4, 160), ("train", 50, 4, 320),
    ("cam", 18, 1, 320), ("cam", 18, 1, 640), ("cam", 50, 1, 320), ("cam", 50, 1, 640),
]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def run_case(kind: str, depth: int, batch: int, side: int, threads: int, device: str) -> dict:
    import torch

    from esol.losses import classification_loss
    from esol.models.esol_net import Arch, ESOLNet
    from esol.utils import select_device

    torch.set_num_threads(threads)
    dev = select_device(device)
    torch.manual_seed(0)
    net = ESOLNet(Arch(num_classes=20, depth=depth, kernel_size=3, frozen_bn=False,
                       frozen_stages=0), pretrained="none").to(dev)
    base = _peak_mb()
    steps = 3
    if kind == "train":
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
        x = torch.randn(batch, 3, side, side, device=dev)
        y = (torch.rand(batch, 20, device=dev) > 0.8).float()

        def step():
            loss = classification_loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        net.eval()
        x = torch.randn(1, 3, side, side, device=dev)

        def step():
            with torch.no_grad():
                net.class_maps(torch.cat([x, x.flip(-1)]))
    step()  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    secs = (time.perf_counter() - start) / steps / batch
    return {"kind": kind, "depth": depth, "batch": batch, "side": side, "device": str(dev),
            "threads": threads, "base_rss_mb": base, "peak_rss_mb": _peak_mb(),
            "seconds_per_image": secs,
            "rss_bytes_per_pixel": (_peak_mb() - base) * 2**20 / (batch * side * side)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/out/rule_resources.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--case", nargs=4, help=argparse.SUPPRESS)  # internal: one case, JSON out
    args = ap.parse_args()
    if args.case:
        kind, depth, batch, side = args.case
        print(json.dumps(run_case(kind, int(depth), int(batch), int(side), args.threads,
                                  args.device)))
        return
    rows = []
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                              "--device", args.device, "--case", *map(str, case)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    result = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
              "cases": rows}
    write_json(args.out, result)


if __name__ == "__main__":
    main()
