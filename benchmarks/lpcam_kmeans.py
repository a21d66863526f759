"""Prototype clustering at VOC scale: wsss cosine k-means vs scikit-learn's KMeans.

Each method runs in its own subprocess on the same seeded feature set (``N×2048`` float32,
post-ReLU-like: a mixture of sparse non-negative "part" directions with noise and random
scales, generated in chunks). Memory: after the data is generated the process's peak-RSS mark
is reset (``/proc/self/clear_refs``), so ``fit_peak_extra_mb`` is the resident memory the
fit needed beyond everything already there (the data included). scikit-learn clusters
the L2-normalised features (normalised in place; Euclidean k-means on unit vectors is the
closest it has to cosine k-means), with ``n_init=1``, ``k-means++``, ``copy_x=False`` and the
same ``max_iter``. Both use ``--threads`` BLAS/OpenMP threads (default 1: on a shared 2-core
machine, 2 spinning OpenMP threads made scikit-learn 8× slower, not faster). Quality is the
cosine objective of both: the mean cosine between each point and its assigned centre.

    .venv/bin/python benchmarks/lpcam_kmeans.py --sizes 100000 500000 \\
        --out benchmarks/results/lpcam_kmeans.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

CHUNK = 10_000


def make_features(n: int, d: int, parts: int = 24, seed: int = 0) -> torch.Tensor:
    """``n×d`` non-negative features around ``parts`` sparse directions (chunked, seeded)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.relu(torch.randn(parts, d, generator=g) - 0.5) * 2
    x = torch.empty(n, d)
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        which = torch.randint(parts, (m,), generator=g)
        scale = 0.5 + torch.rand(m, 1, generator=g)
        noise = torch.randn(m, d, generator=g)
        x[s : s + m] = torch.relu(centres[which] + noise) * scale
    return x


def cosine_objective(x: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cosine between each row and its assigned centre (chunked)."""
    c = torch.nn.functional.normalize(centres.float(), dim=1)
    total = 0.0
    for s in range(0, len(x), CHUNK):
        xs = torch.nn.functional.normalize(x[s : s + CHUNK], dim=1)
        total += float((xs * c[labels[s : s + CHUNK]]).sum())
    return total / len(x)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process to its current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def run_one(method: str, n: int, d: int, k: int, max_iter: int, seed: int, threads: int) -> dict:
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    x = make_features(n, d, seed=seed)
    data_mb = x.numel() * 4 / 2**20
    gc.collect()
    reset_peak_rss()
    before = _status_mb("VmRSS")
    start = time.perf_counter()
    if method.startswith("wsss"):
        from wsss.maps.kmeans import cosine_kmeans

        update = "reference" if method == "wsss-reference" else "normalized"
        result = cosine_kmeans(
            x, k, init="k-means++", max_iter=max_iter, tol=1e-4, seed=seed, update=update
        )
        seconds = time.perf_counter() - start
        labels, centres, n_iter = result.labels, result.centers, result.n_iter
        converged = result.converged
    else:
        from sklearn.cluster import KMeans

        xn = x.numpy()
        for s in range(0, n, CHUNK):  # normalise in place: no second copy of the data
            block = xn[s : s + CHUNK]
            block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        km = KMeans(
            k, init="k-means++", n_init=1, max_iter=max_iter, random_state=seed, copy_x=False
        ).fit(xn)
        seconds = time.perf_counter() - start
        labels = torch.from_numpy(km.labels_.astype(np.int64))
        centres = torch.from_numpy(km.cluster_centers_)
        n_iter, converged = int(km.n_iter_), int(km.n_iter_) < max_iter
    peak = _status_mb("VmHWM")
    return {
        "method": method,
        "n": n,
        "d": d,
        "k": k,
        "seconds": round(seconds, 2),
        "n_iter": n_iter,
        "converged": bool(converged),
        "seconds_per_iter": round(seconds / max(n_iter, 1), 3),
        "cosine_objective": round(cosine_objective(x, centres, labels), 5),
        "data_mb": round(data_mb),
        "rss_before_fit_mb": round(before),
        "fit_peak_rss_mb": round(peak),
        "fit_peak_extra_mb": round(peak - before),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 500_000])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--max-iter", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS/OpenMP threads of both methods"
    )
    parser.add_argument(
        "--methods", nargs="+", default=["wsss-normalized", "wsss-reference", "sklearn"]
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lpcam_kmeans.json"))
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        method, n = args.child[0], int(args.child[1])
        row = run_one(method, n, args.dim, args.k, args.max_iter, args.seed, args.threads)
        print(json.dumps(row))
        return

    rows = []
    for n in args.sizes:
        for method in args.methods:
            cmd = [sys.executable, __file__, "--child", method, str(n)]
            cmd += ["--dim", str(args.dim), "--k", str(args.k), "--max-iter", str(args.max_iter)]
            cmd += ["--seed", str(args.seed), "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "benchmark": "lpcam_kmeans",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "device": "cpu",
            "load_average_at_end": list(os.getloadavg()),
        },
        "settings": {"k": args.k, "max_iter": args.max_iter, "dim": args.dim, "seed": args.seed},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
