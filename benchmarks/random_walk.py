"""Random walk at VOC size: sparse neighbour products vs the dense reference formulation.

One run measures both on the same inputs: a 125×94 stride-4 grid (a 500×375 VOC image),
21 channels, a seeded "realistic" boundary map (low noise inside regions, high ridges with a
soft profile along the borders of random Voronoi regions) and smooth seed blobs. Both compute
``x · T^(2^8)`` (β = 10, radius 5); the dense one is the reference's: the ``N×N`` affinity
matrix, ``A^β``, column normalisation and eight squarings (written as leanly as it goes: in-place
power and division, so it holds two ``N×N`` matrices during a squaring; the reference code holds
more, so the ratio below is conservative).

Memory: on CPU the kernel's peak-RSS mark of the process (VmHWM) is reset
(``/proc/self/clear_refs``) just before each method and read after it, minus the resident memory
before it; on CUDA ``torch.cuda.max_memory_allocated`` minus what was allocated before.

    .venv/bin/python benchmarks/random_walk.py --out benchmarks/results/random_walk.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from wsss.io.atomic import atomic_write_json
from wsss.refine.random_walk import propagate, propagate_dense


def realistic_inputs(
    h: int, w: int, k: int, regions: int = 9, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(seeds K×h×w, boundary h×w)``: Voronoi regions, boundary ridges on their borders."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(regions, 2, generator=g) * torch.tensor([h, w])
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    dist = (ys[None] - centres[:, 0, None, None]) ** 2 + (xs[None] - centres[:, 1, None, None]) ** 2
    two = dist.topk(2, dim=0, largest=False).values.sqrt()
    gap = two[1] - two[0]  # 0 on a border between two regions
    ridge = torch.exp(-(gap**2) / 2.0)  # soft ridge about a pixel wide
    noise = torch.rand(h, w, generator=g) ** 4 * 0.3
    boundary = (0.95 * ridge + noise).clamp(0, 1)
    region = dist.argmin(dim=0)
    seeds = torch.zeros(k, h, w)
    for c in range(k):
        cy, cx = (torch.rand(2, generator=g) * torch.tensor([h, w])).tolist()
        sigma = 4 + 10 * torch.rand(1, generator=g).item()
        blob = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))
        inside = (region == region[int(cy), int(cx)]).float()
        seeds[c] = blob * (0.3 + 0.7 * inside)
    seeds = seeds / seeds.amax(dim=(1, 2), keepdim=True)
    return seeds, F.avg_pool2d(boundary[None, None], 3, 1, 1)[0, 0]


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(fn, *args, device: torch.device, **kwargs) -> tuple[torch.Tensor, float, float]:
    """``(output, seconds, extra peak MB)`` of ``fn(*args, **kwargs)``."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        before = _status_mb("VmRSS")
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        peak = _status_mb("VmHWM") - before
    return out, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=125)
    parser.add_argument("--width", type=int, default=94)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--beta", type=float, default=10.0)
    parser.add_argument("--exp-times", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    seeds, boundary = realistic_inputs(args.height, args.width, args.classes, seed=args.seed)
    seeds, boundary = seeds.to(device), boundary.to(device)
    x = seeds * (1 - boundary)
    common = dict(radius=args.radius, beta=args.beta, exp_times=args.exp_times)
    propagate(x[:, :12, :12], boundary[:12, :12], **common)  # warm-up (allocator, kernels)

    results = {}
    outputs = {}
    for name, fn in (("sparse", propagate), ("dense", propagate_dense)):
        out, seconds, peak = measure(fn, x, boundary, device=device, **common)
        outputs[name] = out.double().cpu()
        results[name] = {"seconds": round(seconds, 3), "peak_extra_mb": round(peak, 1)}
        print(f"{name:>6}: {seconds:8.2f} s, peak +{peak:9.1f} MB", flush=True)
        del out
    s, d = outputs["sparse"], outputs["dense"]
    n = args.height * args.width
    record = {
        "grid": [args.height, args.width],
        "pixels": n,
        "classes": args.classes,
        **common,
        "device": str(device),
        "threads": args.threads,
        "dense_matrix_mb": round(n * n * 4 / 2**20, 1),
        "methods": results,
        "memory_ratio_sparse_over_dense": round(
            results["sparse"]["peak_extra_mb"] / results["dense"]["peak_extra_mb"], 4
        ),
        "speedup_dense_over_sparse": round(
            results["dense"]["seconds"] / results["sparse"]["seconds"], 2
        ),
        "max_abs_diff": float((s - d).abs().max()),
        "max_abs_diff_max_normalised": float((s / s.max() - d / d.max()).abs().max()),
        "boundary_mean": round(float(boundary.mean()), 4),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    print(json.dumps(record, indent=2))
    if args.out is not None:
        atomic_write_json(args.out, record)


if __name__ == "__main__":
    main()
