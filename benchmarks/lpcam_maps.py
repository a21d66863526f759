"""LPCAM map generation: the folded matrix product vs a straightforward per-prototype loop.

Similarity stage (the part LPCAM adds to CAM inference): for each image, the summed features
``g`` of the four TTA scales of a 500×375 image at output stride 16 (D = 2048 grids of 32×24,
16×12, 47×36 and 63×47), random non-negative values; 20 classes with 12 class and 8 context
prototypes each; ``--classes`` present classes per image. Three implementations:

- ``loop``: one ``F.cosine_similarity`` map per prototype, averaged per class, FG − BG, ReLU;
- ``matmul``: all prototypes of the present classes in one normalised product, then the block
  average;
- ``wsss``: :func:`wsss.maps.lpcam.lpcam_map` with :meth:`Prototypes.head` (the block average
  folded into one ``K×D`` matrix, built once per image).

End to end (``--e2e-images``): :func:`wsss.maps.lpcam.lpcam_maps_batch` with a random ResNet-50
at the four scales with flips, against the same TTA with the loop as the merge step.

    .venv/bin/python benchmarks/lpcam_maps.py --out benchmarks/results/lpcam_maps.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from wsss.maps.lpcam import Prototypes, lpcam_map, lpcam_maps_batch
from wsss.maps.tta import DEFAULT_SCALES, multiscale_flip, normalize_maps
from wsss.models.classifier import CAMClassifier

GRIDS = [(32, 24), (16, 12), (47, 36), (63, 47)]  # 500×375 at scales 1, 0.5, 1.5, 2 (OS16)


def make_prototypes(classes: int, d: int, n_fg: int, n_ctx: int, seed: int = 0) -> Prototypes:
    g = torch.Generator().manual_seed(seed)
    return Prototypes(
        foreground=[torch.rand(n_fg, d, generator=g) ** 2 for _ in range(classes)],
        context=[torch.rand(n_ctx, d, generator=g) ** 2 for _ in range(classes)],
        classes=[f"c{i}" for i in range(classes)],
    )


def loop_map(
    g: torch.Tensor, protos: Prototypes, classes: list[int], context: bool
) -> torch.Tensor:
    """The straightforward reference: one cosine map per prototype."""
    out = []
    for n in classes:
        fg = torch.stack(
            [F.cosine_similarity(g, q[:, None, None], dim=0) for q in protos.foreground[n]]
        )
        a = fg.mean(0)
        if context and len(protos.context[n]):
            bg = torch.stack(
                [F.cosine_similarity(g, b[:, None, None], dim=0) for b in protos.context[n]]
            )
            a = a - bg.mean(0)
        out.append(torch.relu(a))
    return torch.stack(out)


def matmul_map(
    g: torch.Tensor, protos: Prototypes, classes: list[int], context: bool
) -> torch.Tensor:
    """All prototypes of the present classes in one product, then the block average."""
    fg = [protos.foreground[n] for n in classes]
    ctx = [protos.context[n] if context else protos.context[n][:0] for n in classes]
    bank = F.normalize(torch.cat(fg + ctx), dim=1)
    sims = bank @ F.normalize(g, dim=0).flatten(1)  # M×hw
    out, start = [], 0
    fg_sims = sims[: sum(len(f) for f in fg)]
    ctx_sims = sims[sum(len(f) for f in fg) :]
    ctx_start = 0
    for f, c in zip(fg, ctx, strict=True):
        a = fg_sims[start : start + len(f)].mean(0)
        if len(c):
            a = a - ctx_sims[ctx_start : ctx_start + len(c)].mean(0)
        start, ctx_start = start + len(f), ctx_start + len(c)
        out.append(torch.relu(a))
    return torch.stack(out).view(len(classes), *g.shape[1:])


def bench_similarity(args: argparse.Namespace) -> dict:
    protos = make_prototypes(20, args.dim, 12, 8)
    g = torch.Generator().manual_seed(1)
    images = []
    for _ in range(args.images):
        feats = [torch.relu(torch.randn(args.dim, h, w, generator=g)) for h, w in GRIDS]
        classes = torch.randperm(20, generator=g)[: args.classes].sort().values.tolist()
        images.append((feats, classes))

    def wsss_impl(feats, classes, context):
        head = protos.head(classes, context=context)
        return [lpcam_map(f, head) for f in feats]

    impls = {
        "loop": lambda feats, classes, context: [
            loop_map(f, protos, classes, context) for f in feats
        ],
        "matmul": lambda feats, classes, context: [
            matmul_map(f, protos, classes, context) for f in feats
        ],
        "wsss": wsss_impl,
    }
    rows = {}
    outputs = {}
    for name, fn in impls.items():
        fn(*images[0], True)  # warm-up
        start = time.perf_counter()
        outputs[name] = [fn(feats, classes, True) for feats, classes in images]
        seconds = time.perf_counter() - start
        rows[name] = {"seconds": round(seconds, 3), "images_per_s": round(len(images) / seconds, 2)}
    diffs = {}
    for name in ("matmul", "wsss"):
        raw = max(
            float((a - b).abs().max())
            for img_a, img_b in zip(outputs[name], outputs["loop"], strict=True)
            for a, b in zip(img_a, img_b, strict=True)
        )
        norm = max(
            float((normalize_maps(a) - normalize_maps(b)).abs().max())
            for img_a, img_b in zip(outputs[name], outputs["loop"], strict=True)
            for a, b in zip(img_a, img_b, strict=True)
        )
        diffs[name] = {"max_abs_diff_raw": raw, "max_abs_diff_normalised": norm}
    loop_s = rows["loop"]["seconds"]
    return {
        "images": args.images,
        "classes_per_image": args.classes,
        "prototypes_per_class": {"class": 12, "context": 8},
        "grids": GRIDS,
        "dim": args.dim,
        "timings": rows,
        "speedup_vs_loop": {n: round(loop_s / rows[n]["seconds"], 1) for n in ("matmul", "wsss")},
        "vs_loop": diffs,
    }


def bench_end_to_end(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = CAMClassifier("resnet50", num_classes=20).eval()
    protos = make_prototypes(20, model.feature_dim, 12, 8)
    g = torch.Generator().manual_seed(2)
    images = [
        torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8, generator=g)
        for _ in range(args.e2e_images)
    ]
    classes = [
        torch.randperm(20, generator=g)[: args.classes].sort().values.tolist() for _ in images
    ]

    def features(x):
        return model(x, with_features=True).features

    start = time.perf_counter()
    fast = lpcam_maps_batch(model, images, classes, prototypes=protos, amp=False)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    slow = []
    for image, cls in zip(images, classes, strict=True):
        _, hr = multiscale_flip(
            features,
            image,
            DEFAULT_SCALES,
            merge=lambda a, b, c=cls: torch.stack([loop_map(g, protos, c, True) for g in a + b]),
            amp=False,
        )
        slow.append(normalize_maps(hr).numpy())
    slow_s = time.perf_counter() - start
    diff = max(float(abs(f.hr - s).max()) for f, s in zip(fast, slow, strict=True))
    return {
        "images": len(images),
        "image_size": [375, 500],
        "backbone": "resnet50 (random weights), 4 scales × flip",
        "wsss_seconds": round(fast_s, 2),
        "loop_seconds": round(slow_s, 2),
        "speedup": round(slow_s / fast_s, 2),
        "max_abs_diff_hr": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--e2e-images", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lpcam_maps.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    result = {
        "benchmark": "lpcam_maps",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "device": "cpu",
        },
        "similarity": bench_similarity(args),
    }
    print(json.dumps(result["similarity"], indent=2), flush=True)
    if args.e2e_images:
        result["end_to_end"] = bench_end_to_end(args)
        print(json.dumps(result["end_to_end"], indent=2), flush=True)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
