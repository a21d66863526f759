"""CAM test-time augmentation: batched implementation vs a straightforward loop.

Both compute METHODS.md §3 (scales 1.0, 0.5, 1.5, 2.0 with flips) on the same randomly
initialised model and images:

- ``loop``: one forward per image, per scale and per flip, each map upsampled and added on its
  own (the straightforward baseline);
- ``batched``: :func:`wsss.maps.cam.cam_maps_batch` one image at a time (each scale's image and
  its flip in one forward; ``wsss cams --batch-size 1``);
- ``grouped``: ``cam_maps_batch`` on several images at once, images of equal size sharing
  forward passes (``wsss cams --batch-size N``);
- ``grouped+cl``: the same with the model in channels-last memory format (what
  ``run_maps(channels_last=True)``, the default, does).

Timings are interleaved group by group (the methods run back to back on the same images), so a
change of machine load hits all of them alike. Results go to ``benchmarks/results/cam_tta.json``.

Usage::

    python benchmarks/cam_tta.py                  # 6 × resnet50 OS16, 32 × resnet10t OS8
    python benchmarks/cam_tta.py --r50-images 3 --threads 1   # quicker; on a shared machine
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss.data.transforms import normalize
from wsss.maps.cam import cam_maps_batch
from wsss.maps.tta import DEFAULT_SCALES, resize_image, size_groups
from wsss.models.classifier import CAMClassifier

RESULTS = Path(__file__).parent / "results" / "cam_tta.json"


@torch.inference_mode()
def loop_cam(model, image, classes, scales=DEFAULT_SCALES):
    """Straightforward TTA of one image: separate forwards for every scale and flip."""
    h, w = image.shape[-2:]
    size4 = (math.ceil(h / 4), math.ceil(w / 4))
    size_up = (16 * math.ceil(h / 16), 16 * math.ceil(w / 16))
    strided = torch.zeros(model.num_classes, *size4)
    hr = torch.zeros(model.num_classes, h, w)
    for s in scales:
        x = normalize(resize_image(image, (round(h * s), round(w * s))))[None]
        for flip in (False, True):
            xi = x.flip(-1) if flip else x
            m = F.relu(model(xi, with_maps=True).maps)
            m = m.flip(-1) if flip else m
            strided += F.interpolate(m, size4, mode="bilinear", align_corners=False)[0]
            hr += F.interpolate(m, size_up, mode="bilinear", align_corners=False)[0, :, :h, :w]
    strided, hr = strided[classes], hr[classes]
    strided /= strided.amax(dim=(1, 2), keepdim=True) + 1e-5
    hr /= hr.amax(dim=(1, 2), keepdim=True) + 1e-5
    return strided.numpy(), hr.numpy()


def smooth_image(rng: np.random.Generator, h: int, w: int) -> torch.Tensor:
    """Random image with photo-like smooth structure (noise upsampled from a coarse grid)."""
    coarse = torch.from_numpy(rng.random((1, 3, max(2, h // 24), max(2, w // 24)))).float()
    img = F.interpolate(coarse, (h, w), mode="bicubic", align_corners=False)[0]
    img = img + 0.05 * torch.from_numpy(rng.standard_normal((3, h, w))).float()
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def make_inputs(sizes, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    images = [smooth_image(rng, h, w) for h, w in sizes]
    classes = [
        sorted(rng.choice(num_classes, size=rng.integers(1, 4), replace=False).tolist())
        for _ in sizes
    ]
    return images, classes


def run_loop(model, images, classes):
    return [loop_cam(model, im, c) for im, c in zip(images, classes, strict=True)]


def run_batched(model, images, classes):
    return [cam_maps_batch(model, [im], [c])[0] for im, c in zip(images, classes, strict=True)]


def run_grouped(model, images, classes):
    return cam_maps_batch(model, images, classes)


# name → (function, whether it gets the channels-last copy of the model)
METHODS = {
    "loop": (run_loop, False),
    "batched": (run_batched, False),
    "grouped": (run_grouped, False),
    "grouped+cl": (run_grouped, True),
}


def bench(name, model, sizes, group_size):
    images, classes = make_inputs(sizes, model.num_classes)
    # What ``run_maps(channels_last=True)`` does to the model, on a copy.
    models = {False: model, True: copy.deepcopy(model).to(memory_format=torch.channels_last)}
    # The first call of a process pays one-off initialisation (thread pools, kernels).
    for fn, cl in METHODS.values():
        fn(models[cl], images[:1], classes[:1])

    totals = dict.fromkeys(METHODS, 0.0)
    outputs = {}
    max_diff = dict.fromkeys(METHODS, 0.0)
    groups = size_groups([tuple(im.shape[-2:]) for im in images])
    chunks = [g[i : i + group_size] for g in groups for i in range(0, len(g), group_size)]
    order = list(METHODS)
    for k, chunk in enumerate(chunks):
        ims, cls = [images[i] for i in chunk], [classes[i] for i in chunk]
        # Rotate which method goes first, so that none always meets a new shape first.
        for method in order[k % len(order) :] + order[: k % len(order)]:
            start = time.perf_counter()
            fn, cl = METHODS[method]
            outputs[method] = fn(models[cl], ims, cls)
            totals[method] += time.perf_counter() - start
        for method in order[1:]:
            for (cam, hr), m in zip(outputs["loop"], outputs[method], strict=True):
                diff = max(np.abs(cam - m.cam).max(), np.abs(hr - m.hr).max())
                max_diff[method] = max(max_diff[method], float(diff))
        print(f"  {name}: {len(chunk)} image(s) of {tuple(ims[0].shape[-2:])} done", flush=True)

    n = len(images)
    rows = []
    for method, seconds in totals.items():
        rows.append(
            {
                "model": name,
                "method": method,
                "images": n,
                "seconds": round(seconds, 3),
                "images_per_s": round(n / seconds, 3),
                "speedup_vs_loop": round(totals["loop"] / seconds, 3),
                "max_abs_diff_vs_loop": max_diff[method],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--r50-images", type=int, default=6, help="resnet50 images (VOC sizes)")
    parser.add_argument("--demo-images", type=int, default=32, help="resnet10t images (demo sizes)")
    parser.add_argument("--group", type=int, default=8, help="images per call for 'grouped'")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [torch default]")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    load_before = os.getloadavg()
    start = time.perf_counter()
    rows = []
    configs = []
    if args.r50_images:
        voc_sizes = [(375, 500), (500, 375), (333, 500)]
        sizes = [voc_sizes[i % len(voc_sizes)] for i in range(args.r50_images)]
        configs.append(("resnet50 OS16", CAMClassifier("resnet50", 20, 16), sizes))
    if args.demo_images:
        demo_sizes = [(112, 128), (128, 112), (96, 144), (144, 96)]
        sizes = [demo_sizes[i % len(demo_sizes)] for i in range(args.demo_images)]
        configs.append(("resnet10t OS8", CAMClassifier("resnet10t", 20, 8), sizes))
    for name, model, sizes in configs:
        print(f"{name}: {len(sizes)} images", flush=True)
        rows += bench(name, model.eval(), sizes, args.group)

    print()
    header = f"{'model':<15} {'method':<10} {'images':>6} {'img/s':>8} {'× loop':>7} {'max |Δ|':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['model']:<15} {r['method']:<10} {r['images']:>6} {r['images_per_s']:>8.3f} "
            f"{r['speedup_vs_loop']:>7.2f} {r['max_abs_diff_vs_loop']:>9.1e}"
        )
    result = {
        "benchmark": "cam_tta",
        "scales": list(DEFAULT_SCALES),
        "rows": rows,
        "wall_s": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwall {result['wall_s']} s; load average {result['load_average_before_after']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
