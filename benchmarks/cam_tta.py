"""CAM test-time augmentation: the library's default vs the published code's per-image loop.

All variants compute METHODS.md §3 (scales 1.0, 0.5, 1.5, 2.0 with flips) on the same randomly
initialised model and images:

- ``loop``: the published code's inference loop: per image and per scale one forward of the
  image and its flip, each output upsampled and added on its own; default memory format.
- ``default``: what ``wsss cams`` / ``run_maps`` does on the CPU with default settings: one
  image per call (``default_batch_size``), forward calls of at most 0.25 Mpx
  (``default_max_pixels``: an image and its flip together while they fit, apart above),
  the model in channels-last memory format.
- ``pairs``: the same, but an image and its flip always in one forward (the default before
  ``CPU_MAX_PIXELS``).
- ``one input/call``: every input in its own forward (``max_pixels=1``).
- ``gpu default``: 8 images per call, forward calls of up to 3 Mpx (equal sizes share them),
  the GPU's defaults, here on the CPU.

Times are the process's CPU time (``time.process_time``), which a busy shared machine disturbs
far less than wall time; with one torch thread (``--threads 1``) it is the computation's time.
The variants run back to back on each group of images, in rotating order, after a warm-up.
``max |Δ|`` is the largest difference of any normalised map value from ``loop``. Results go
to ``benchmarks/results/cam_tta.json``.

Memory (``--memory``): each image size runs in a fresh process, which measures the rise of
its peak resident memory (``ru_maxrss``) while the default path computes the maps of one
image with two classes (tracemalloc does not see torch's allocations); the slope between
sizes is the memory per megapixel, the intercept what a process holds once.

Usage::

    python benchmarks/cam_tta.py --threads 1             # resnet10t OS8, 16 images: ~1 min
    python benchmarks/cam_tta.py --threads 1 --r50-images 4   # adds ResNet-50 at VOC sizes
    python benchmarks/cam_tta.py --threads 1 --memory 1000x1000 2000x1500 --memory-model resnet50
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss.data.transforms import normalize
from wsss.io.atomic import atomic_write_json
from wsss.maps.cam import cam_maps_batch
from wsss.maps.runner import default_batch_size
from wsss.maps.tta import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_SCALES,
    default_max_pixels,
    largest_input,
    resize_image,
    size_groups,
)
from wsss.models.classifier import CAMClassifier

RESULTS = Path(__file__).parent / "results" / "cam_tta.json"


@torch.inference_mode()
def loop_cam(model, image, classes, scales=DEFAULT_SCALES):
    """The published code's TTA of one image: per scale one forward of the image and its flip."""
    h, w = image.shape[-2:]
    size4 = (math.ceil(h / 4), math.ceil(w / 4))
    size_up = (16 * math.ceil(h / 16), 16 * math.ceil(w / 16))
    strided = torch.zeros(model.num_classes, *size4)
    hr = torch.zeros(model.num_classes, h, w)
    for s in scales:
        x = normalize(resize_image(image, (round(h * s), round(w * s))))[None]
        maps = F.relu(model(torch.cat([x, x.flip(-1)]), with_maps=True).maps)
        for m in (maps[:1], maps[1:].flip(-1)):
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


def per_call(images_per_call, max_pixels):
    def run(model, images, classes):
        out = []
        for k in range(0, len(images), images_per_call):
            chunk = slice(k, k + images_per_call)
            out += cam_maps_batch(model, images[chunk], classes[chunk], max_pixels=max_pixels)
        return out

    return run


# name → (function, whether it gets the channels-last copy of the model)
METHODS = {
    "loop": (run_loop, False),
    "default": (per_call(default_batch_size("cpu"), default_max_pixels("cpu")), True),
    "pairs": (per_call(1, DEFAULT_MAX_PIXELS), True),
    "one input/call": (per_call(1, 1), True),
    "gpu default": (per_call(default_batch_size("cuda"), default_max_pixels("cuda")), True),
}


def bench(name, model, sizes, rounds):
    images, classes = make_inputs(sizes, model.num_classes)
    models = {False: model, True: copy.deepcopy(model).to(memory_format=torch.channels_last)}
    # The first calls of a process pay one-off initialisation (thread pools, kernels).
    for fn, cl in METHODS.values():
        fn(models[cl], images[:2], classes[:2])

    totals = dict.fromkeys(METHODS, 0.0)
    max_diff = dict.fromkeys(METHODS, 0.0)
    groups = size_groups([tuple(im.shape[-2:]) for im in images])
    order = list(METHODS)
    for r in range(rounds):
        for k, group in enumerate(groups):
            ims, cls = [images[i] for i in group], [classes[i] for i in group]
            turn = (r * len(groups) + k) % len(order)
            outputs = {}
            for method in order[turn:] + order[:turn]:
                fn, cl = METHODS[method]
                start = time.process_time()
                outputs[method] = fn(models[cl], ims, cls)
                totals[method] += time.process_time() - start
            for method in order[1:]:
                for (cam, hr), m in zip(outputs["loop"], outputs[method], strict=True):
                    diff = max(np.abs(cam - m.cam).max(), np.abs(hr - m.hr).max())
                    max_diff[method] = max(max_diff[method], float(diff))
        print(f"  {name}: round {r + 1}/{rounds} done", flush=True)

    n = len(images) * rounds
    return [
        {
            "model": name,
            "method": method,
            "images": n,
            "cpu_seconds": round(seconds, 3),
            "images_per_cpu_s": round(n / seconds, 3),
            "speedup_vs_loop": round(totals["loop"] / seconds, 3),
            "max_abs_diff_vs_loop": max_diff[method],
        }
        for method, seconds in totals.items()
    ]


ARCHS = {"resnet10t": 8, "resnet50": 16}  # backbone → output stride


def memory_child(arch: str, h: int, w: int) -> None:
    """Peak-memory rise of one image's maps on the default path (run in a fresh process)."""
    torch.manual_seed(0)
    model = CAMClassifier(arch, 20, ARCHS[arch]).eval().to(memory_format=torch.channels_last)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    cam_maps_batch(model, [image[:, :64, :64]], [[0, 1]])  # allocator and kernels warm
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.process_time()
    cam_maps_batch(model, [image], [[0, 1]])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = {"size": [h, w], "rise_mb": (peak - before) / 1024, "cpu_s": time.process_time() - start}
    print(json.dumps(row))


def memory(arch: str, sizes: list[str], threads: int | None) -> dict:
    rows = []
    for text in sizes:
        h, w = (int(v) for v in text.lower().split("x"))
        cmd = [sys.executable, __file__, "--memory-child", arch, str(h), str(w)]
        if threads:
            cmd += ["--threads", str(threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        mpx = h * w / 1e6
        _, (ih, iw) = largest_input((h, w), DEFAULT_SCALES)
        row.update(image_mpx=mpx, largest_input_mpx=ih * iw / 1e6)
        rows.append(row)
        print(f"  {arch} {w}×{h}: +{row['rise_mb']:.0f} MB peak ({row['cpu_s']:.0f} s CPU)")
    result = {"model": arch, "rows": rows}
    if len(rows) > 1:
        x = np.array([r["image_mpx"] for r in rows])
        y = np.array([r["rise_mb"] for r in rows])
        slope, intercept = np.polyfit(x, y, 1)
        per_input = slope / (max(DEFAULT_SCALES) ** 2)
        result.update(mb_per_image_mpx=slope, mb_fixed=intercept, mb_per_input_mpx=per_input)
        print(
            f"  {arch}: {slope:.0f} MB per image megapixel ({per_input:.0f} MB per megapixel "
            f"of the largest input) + {intercept:.0f} MB"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo-images", type=int, default=16, help="resnet10t images (demo sizes)")
    parser.add_argument("--r50-images", type=int, default=0, help="resnet50 images (VOC sizes)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the images")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [torch default]")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--memory", nargs="*", metavar="HxW", help="measure memory at sizes")
    parser.add_argument("--memory-model", choices=sorted(ARCHS), default="resnet10t")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        arch, h, w = args.memory_child
        return memory_child(arch, int(h), int(w))
    if args.memory:
        result = memory(args.memory_model, args.memory, args.threads)
        atomic_write_json(args.out.with_name(f"cam_tta_memory_{args.memory_model}.json"), result)
        return None
    torch.manual_seed(0)

    load_before = os.getloadavg()
    start = time.perf_counter()
    configs = []
    if args.demo_images:
        demo_sizes = [(112, 128), (128, 112), (96, 144), (144, 96)]
        sizes = [demo_sizes[i % len(demo_sizes)] for i in range(args.demo_images)]
        configs.append(("resnet10t OS8", CAMClassifier("resnet10t", 20, 8), sizes))
    if args.r50_images:
        voc_sizes = [(375, 500), (500, 375), (333, 500)]
        sizes = [voc_sizes[i % len(voc_sizes)] for i in range(args.r50_images)]
        configs.append(("resnet50 OS16", CAMClassifier("resnet50", 20, 16), sizes))
    rows = []
    for name, model, sizes in configs:
        print(f"{name}: {len(sizes)} images × {args.rounds} rounds", flush=True)
        rows += bench(name, model.eval(), sizes, args.rounds)

    print()
    header = (
        f"{'model':<14} {'method':<15} {'images':>6} {'img/cpu-s':>9} {'× loop':>7} {'max |Δ|':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['model']:<14} {r['method']:<15} {r['images']:>6} {r['images_per_cpu_s']:>9.3f} "
            f"{r['speedup_vs_loop']:>7.2f} {r['max_abs_diff_vs_loop']:>9.1e}"
        )
    result = {
        "benchmark": "cam_tta",
        "scales": list(DEFAULT_SCALES),
        "clock": "process_time",
        "rows": rows,
        "wall_s": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    atomic_write_json(args.out, result)
    print(f"\nwall {result['wall_s']} s; load average {result['load_average_before_after']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
