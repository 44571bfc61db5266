"""Peak memory and time of the IRN random walk for a 500x375 image (a VOC-sized image).

Not a test: it measures and writes figures to a JSON file (README, "Benchmarks").

    python benchmarks/random_walk_memory.py --out benchmarks/out/random_walk_memory.json

IRN's ``make_sem_seg_labels`` is the step that runs out of memory at full image size:
it builds the dense (n x n) transition matrix of the stride-4 grid (n = 125 x 94 =
11 750 pixels for 500x375, 552 MB in float32, padded 731 MB) and squares it
``exp_times`` times. ``esol.irn.random_walk`` keeps the matrix sparse and applies it
``2^exp_times`` times. Each case runs in a fresh process; the figure is the increase of
that process's peak resident memory (``ru_maxrss``) over its resident memory just
before the walk (torch imported and warmed up on a small map), so it counts the pair
index, the sparse matrix and the walk's vectors. On CUDA it also reports
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import time

from esol.evaluate import write_json


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _case(args: tuple[int, int, int, str, dict]) -> dict:
    height, width, classes, device, walk = args
    import torch

    from esol.cam import strided_size
    from esol.irn.paths import pair_index
    from esol.irn.random_walk import random_walk, walk_to_label

    torch.set_num_threads(1)
    torch.manual_seed(0)
    random_walk(torch.rand(1, 8, 8, device=device), torch.rand(8, 8, device=device), **walk)
    h, w = strided_size((height, width), 4)
    # A boundary map as IRN's net gives one: mostly low, with lines of high values.
    boundary = torch.rand(h, w, device=device) * 0.2
    boundary[h // 2, :] = 0.95
    boundary[:, w // 3] = 0.95
    scores = torch.rand(classes, h, w, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _rss_mb()
    start = time.perf_counter()
    walked = random_walk(scores, boundary, **walk)
    label = walk_to_label(walked, list(range(1, classes + 1)), (height, width), 0.25)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    n = h * w
    pairs = len(pair_index((h, w), walk["radius"]))
    out = {"image": [height, width], "stride4_grid": [h, w], "pixels": n, "classes": classes,
           "pairs": pairs, "transition_nonzeros": 2 * pairs + n,
           "peak_rss_increase_mb": round(peak - before, 1), "rss_before_mb": round(before, 1),
           "seconds": round(seconds, 3),
           "irn_dense_matrix_mb": round(n * n * 4 / 2**20, 1),
           "label_classes_found": sorted(int(v) for v in set(label.ravel().tolist()))}
    if device.startswith("cuda"):
        out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/out/random_walk_memory.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--beta", type=float, default=10)
    parser.add_argument("--exp-times", type=int, default=8)
    args = parser.parse_args()
    walk = {"radius": args.radius, "beta": args.beta, "exp_times": args.exp_times}
    ctx = multiprocessing.get_context("spawn")  # a fresh process per case: independent peaks
    cases = []
    for size, classes in (((375, 500), 1), ((375, 500), 3), ((500, 500), 3)):
        with ctx.Pool(1) as pool:
            cases.append(pool.apply(_case, ((*size, classes, args.device, walk),)))
        print(json.dumps(cases[-1]))
    result = {"what": "sparse random walk of esol.irn.random_walk (IRN make_sem_seg_labels)",
              "random_walk": walk, "device": args.device, "cpu": platform.processor() or
              platform.machine(), "cases": cases}
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
