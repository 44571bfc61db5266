"""Throughput of the full-scale data steps on this machine: COCO and SBD conversion,
and prepare_data's validation pass, on generated data of the published sizes.

Not a test: it measures and writes figures to a JSON file (README, "Full-scale datasets").

    python benchmarks/conversion.py --out benchmarks/out/conversion.json [--images 400]

* COCO: ``--images`` images of 640x480 with 7.3 instances each (COCO train2014's mean:
  604907 annotations over 82783 images), polygons of 8-60 vertices, 1% of instances crowd
  regions in uncompressed RLE; written as an ``instances`` JSON and converted with
  :func:`esol.data.coco.convert_coco` (1 and ``--workers`` processes). Image files are
  1x1 JPEG placeholders: the conversion only links them. Also the parent's resident
  memory per byte of annotation file, to size the real ``instances_train2014.json``.
* SBD: ``cls/<id>.mat`` files of 500x375 (VOC's usual size) in SBD's ``GTcls`` layout,
  converted with :func:`esol.data.voc_aug.convert_sbd`.
* prepare_data: :func:`esol.data.voc.prepare_dataset` over 500x375 JPEGs and masks
  (decodes every image and mask once).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from esol.data import coco, voc, voc_aug
from esol.evaluate import write_json
from machine import cpu_name


def _rss() -> int:
    """Resident memory of this process in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmRSS in /proc/self/status")


def _polygon(rng: np.random.Generator, h: int, w: int) -> list[float]:
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    r = rng.uniform(0.05, 0.35) * min(h, w)
    n = int(rng.integers(8, 61))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.6, 1.0, n)
    xs = np.clip(cx + rad * np.cos(ang), 0, w - 1)
    ys = np.clip(cy + rad * np.sin(ang), 0, h - 1)
    return [round(float(v), 2) for xy in zip(xs, ys, strict=True) for v in xy]


def _crowd_counts(rng: np.random.Generator, h: int, w: int) -> list[int]:
    m = np.zeros((h, w), np.uint8)
    y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    m[y:y + h // 3, x:x + w // 3] = 1
    flat = m.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    counts = np.diff(bounds).tolist()
    return counts if flat[0] == 0 else [0, *counts]


def write_coco(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    h, w = 480, 640
    (root / "train2014").mkdir(parents=True)
    placeholder = root / "placeholder.jpg"
    Image.new("RGB", (1, 1)).save(placeholder)
    images, anns = [], []
    for k in range(n):
        name = f"COCO_train2014_{k:012d}.jpg"
        os.link(placeholder, root / "train2014" / name)
        images.append({"id": k, "file_name": name, "height": h, "width": w})
        for _ in range(rng.poisson(7.3)):
            crowd = rng.random() < 0.01
            seg = ({"size": [h, w], "counts": _crowd_counts(rng, h, w)} if crowd
                   else [_polygon(rng, h, w)])
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": int(rng.integers(1, 81)),
                         "iscrowd": int(crowd), "segmentation": seg, "area": 0.0, "bbox": [0, 0, 1, 1]})
    cats = [{"id": i, "name": f"c{i}", "supercategory": "x"} for i in range(1, 81)]
    path = root / "annotations" / "instances_train2014.json"
    path.parent.mkdir()
    # Compact separators, as COCO publishes its files (they set the memory per file byte).
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats},
                               separators=(",", ":")))
    return path


def bench_coco(tmp: Path, n: int, workers: int) -> dict:
    ann = write_coco(tmp / "coco", n)
    before = _rss()
    with open(ann) as f:
        data = json.load(f)
    loaded = _rss() - before
    del data
    out: dict = {"images": n, "annotation_file_mb": ann.stat().st_size / 1e6,
                 "parent_rss_per_file_byte": loaded / ann.stat().st_size}
    for w in sorted({1, workers}):
        start = time.perf_counter()
        coco.convert_coco({"train": (ann, tmp / "coco" / "train2014")}, tmp / f"out{w}", workers=w)
        out[f"images_per_s_{w}_workers"] = n / (time.perf_counter() - start)
    return out


def bench_sbd_and_prepare(tmp: Path, n: int, workers: int) -> dict:
    rng = np.random.default_rng(0)
    voc_root, sbd = tmp / "VOC2012", tmp / "benchmark_RELEASE" / "dataset"
    ids = [f"2008_{k:06d}" for k in range(n)]
    (sbd / "cls").mkdir(parents=True)
    for k, image_id in enumerate(ids):
        seg = np.zeros((375, 500), np.uint8)
        seg[50:300, 100:400] = 1 + k % 20
        scipy.io.savemat(str(sbd / "cls" / f"{image_id}.mat"), {"GTcls": {"Segmentation": seg}})
        img = voc_root / "JPEGImages" / f"{image_id}.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(img, quality=90)
    (sbd / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    (sbd / "val.txt").write_text("")
    voc.write_split(voc_root, "train", ids[:1])
    voc.write_split(voc_root, "val", ["none"])
    (voc_root / "SegmentationClass").mkdir()
    out: dict = {"images": n}
    start = time.perf_counter()
    voc_aug.convert_sbd(voc_root, sbd.parent, tmp / "conv", workers=workers)
    out[f"sbd_images_per_s_{workers}_workers"] = n / (time.perf_counter() - start)
    train_aug = (tmp / "conv" / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
    start = time.perf_counter()
    voc.prepare_dataset(voc_root, list(voc.VOC_CLASSES), ["train_aug"], workers=1, aug_root=tmp / "conv",
                        split_ids={"train_aug": train_aug})
    out["prepare_images_per_s_1_worker"] = len(train_aug) / (time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/out/conversion.json")
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    results = {"cpu": cpu_name(), "cpus": os.cpu_count(),
               "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        results["coco"] = bench_coco(Path(tmp), args.images, args.workers)
        results["sbd"] = bench_sbd_and_prepare(Path(tmp), args.images, args.workers)
    write_json(args.out, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
