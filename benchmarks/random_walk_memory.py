"""Peak memory and time of the IRN and PSA random walks for a 500x375 image (a VOC-sized
image), and the time of one PSA training step at the demo's size.

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

PSA's ``infer_aff.py`` builds the dense matrix of the stride-8 grid (63 x 47 = 2 961
pixels for 500x375, 33 MB) and squares it ``logt`` = 8 times; ``esol.refiners.psa``
computes the pair affinities from the AffinityNet features (448 channels, offset by
offset) and walks the sparse matrix of the shared core 256 times. The PSA case measures
that: features (as the network gives them, here random) -> pair affinities -> walk ->
label. The network's forward pass is not part of it (its memory is the backbone's).

The training step is the step ``train_psa`` hands to ``esol.engine.fit`` (forward,
pair affinities, PSA loss, backward, SGD; no data loading) on a batch of random crops
with random stride-8 labels, at the demo's crop and batch size and a ResNet-18, timed
after a warm-up step: wall and CPU seconds, with the load average beside them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import time

import numpy as np
from machine import cpu_name

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


def _psa_case(args: tuple[int, int, int, str, dict]) -> dict:
    height, width, classes, device, walk = args
    import torch

    from esol.refiners import core, psa

    torch.set_num_threads(1)
    torch.manual_seed(0)

    def run(h: int, w: int) -> tuple[np.ndarray, int, int]:
        cams = np.random.default_rng(0).random((classes, h, w), dtype=np.float32)
        scores = psa.cam_at_stride(cams, walk["alpha"]).to(device)
        gh, gw = scores.shape[-2:]
        # AffinityNet features: ELU outputs, here random with a region of distinct values
        feats = torch.rand(1, 448, gh, gw, device=device)
        feats[:, :, : gh // 2] += 2.0
        pairs = core.pairs_in_radius((gh, gw), walk["radius"])
        aff = psa.pair_affinity(feats, pairs)[0]
        walked = psa.psa_random_walk(scores, aff, pairs, walk["beta"], walk["logt"])
        return psa.walk_to_label(walked, np.arange(1, classes + 1), (h, w)), len(pairs), gh * gw

    with torch.no_grad():
        run(16, 16)  # warm-up: kernels and allocator
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        before = _rss_mb()
        start = time.perf_counter()
        label, pairs, n = run(height, width)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"image": [height, width], "stride8_grid": [-(-height // 8), -(-width // 8)], "pixels": n,
           "classes": classes, "pairs": pairs, "transition_nonzeros": 2 * pairs + n,
           "peak_rss_increase_mb": round(peak - before, 1), "rss_before_mb": round(before, 1),
           "seconds": round(seconds, 3), "psa_dense_matrix_mb": round(n * n * 4 / 2**20, 1),
           "label_classes_found": sorted(int(v) for v in set(label.ravel().tolist()))}
    if device.startswith("cuda"):
        out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def _psa_train_step(args: tuple[int, int, int, int, int]) -> dict:
    crop, batch, depth, radius, threads = args
    import torch

    from esol.refiners import core, psa

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = psa.AffinityNet(psa.PSAArch(depth=depth, frozen_bn=True)).train()
    groups = psa.parameter_groups(net, 0.1, 10, 5e-4)
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.0)
    pairs = core.pairs_in_radius((crop // 8, crop // 8), radius)
    img = torch.randn(batch, 3, crop, crop)
    label = torch.randint(0, 3, (batch, crop // 8, crop // 8))
    label[:, :2] = 255

    def step() -> float:
        loss, _ = psa.psa_loss(psa.pair_affinity(net(img).float(), pairs),
                               core.relation_labels(label, pairs))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    step()  # warm-up
    times, cpu = [], []
    for _ in range(3):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    # Wall time depends on what else the machine runs; CPU time (all threads) less so.
    return {"crop": crop, "batch_size": batch, "depth": depth, "radius": radius,
            "torch_threads": threads, "pairs_per_crop": len(pairs),
            "seconds_per_step": round(sorted(times)[1], 3),
            "seconds_all": [round(t, 3) for t in times],
            "cpu_seconds_per_step": round(sorted(cpu)[1], 3),
            "load_average_1min": round(os.getloadavg()[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/out/random_walk_memory.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--beta", type=float, default=10)
    parser.add_argument("--exp-times", type=int, default=8)
    parser.add_argument("--psa-alpha", type=float, default=16)
    parser.add_argument("--psa-beta", type=float, default=8)
    parser.add_argument("--psa-logt", type=int, default=8)
    parser.add_argument("--psa-crop", type=int, default=160, help="demo crop of the training step")
    parser.add_argument("--psa-batch", type=int, default=8, help="demo batch of the training step")
    parser.add_argument("--psa-depth", type=int, default=18, help="ResNet depth of the training step")
    parser.add_argument("--psa-threads", type=int, default=1,
                        help="torch threads of the training step (1: CPU time not inflated by waiting threads)")
    args = parser.parse_args()
    walk = {"radius": args.radius, "beta": args.beta, "exp_times": args.exp_times}
    psa_walk = {"radius": 5, "alpha": args.psa_alpha, "beta": args.psa_beta, "logt": args.psa_logt}
    ctx = multiprocessing.get_context("spawn")  # a fresh process per case: independent peaks
    cases = []
    for size, classes in (((375, 500), 1), ((375, 500), 3), ((500, 500), 3)):
        with ctx.Pool(1) as pool:
            cases.append(pool.apply(_case, ((*size, classes, args.device, walk),)))
        print(json.dumps(cases[-1]))
    psa_cases = []
    for size, classes in (((375, 500), 1), ((375, 500), 3), ((500, 500), 3)):
        with ctx.Pool(1) as pool:
            psa_cases.append(pool.apply(_psa_case, ((*size, classes, args.device, psa_walk),)))
        print(json.dumps(psa_cases[-1]))
    with ctx.Pool(1) as pool:
        train_step = pool.apply(_psa_train_step, ((args.psa_crop, args.psa_batch, args.psa_depth, 5,
                                                   args.psa_threads),))
    print(json.dumps(train_step))
    result = {"what": "sparse random walks of esol.irn.random_walk (IRN make_sem_seg_labels) and "
                      "esol.refiners.psa (PSA infer_aff), one PSA training step",
              "random_walk": walk, "device": args.device, "cpu": cpu_name(), "cases": cases,
              "psa_random_walk": psa_walk, "psa_cases": psa_cases, "psa_train_step_cpu": train_step}
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
