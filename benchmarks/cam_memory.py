"""Peak RSS of rule make_cam's work on one large image (the figure behind cam_mem_mb).

Not a test. Runs :func:`esol.cam.make_cams` in this process on a one-image VOC-layout
dataset (random pixels, a mask with two classes) and prints the peak resident memory
before and after, with the formula resources.smk uses for the same image:

    python benchmarks/cam_memory.py --size 3000 2250 --depth 18 --scales 1.0 0.5 1.5
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs=2, default=[3000, 2250], metavar=("W", "H"))
    ap.add_argument("--depth", type=int, default=18)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 1.5])
    ap.add_argument("--no-flip", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from esol.cam import make_cams
    from esol.data import voc
    from esol.models.esol_net import Arch, ESOLNet

    torch.set_num_threads(args.threads)
    w, h = args.size
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "voc"
        for d in (voc.IMAGE_DIR, voc.MASK_DIR):
            (root / d).mkdir(parents=True)
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / voc.IMAGE_DIR / "big.jpg")
        mask = np.zeros((h, w), np.uint8)
        mask[: h // 2, : w // 2] = 1
        mask[h // 2:, w // 2:] = 2
        voc.write_label(root / voc.MASK_DIR / "big.png", mask)
        voc.write_split(root, "train", ["big"])
        info = voc.prepare_dataset(root, [f"c{i}" for i in range(args.classes)], ["train"])
        net = ESOLNet(Arch(num_classes=args.classes, depth=args.depth, kernel_size=3,
                           frozen_bn=False, frozen_stages=0), pretrained="none")
        base = _peak_mb()
        t0 = time.time()
        make_cams(net, info, "train", Path(tmp) / "cams.h5", args.scales, not args.no_flip,
                  torch.device("cpu"))
        seconds = time.time() - t0
    print(json.dumps({"size": [w, h], "depth": args.depth, "classes": args.classes,
                      "scales": args.scales, "flip": not args.no_flip,
                      "peak_mb_after_network": round(base), "peak_mb": round(_peak_mb()),
                      "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
