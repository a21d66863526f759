"""Time and memory each stage of the real presets needs on one GPU, estimated from model sizes.

Nothing here runs on a GPU. For each preset (``voc12-pnoc``, ``voc12-lpcam-irn``,
``coco14-lpcam-irn``) the stage graph is built from the preset
(:func:`wsss.pipeline.graph.build_pipeline`) and every network it trains or runs is built on
the ``meta`` device (shapes only, no memory, no arithmetic), where

- torch's ``FlopCounterMode`` counts the FLOPs (2 × multiply-adds) of one forward, and of one
  forward + backward of the summed outputs, at the stage's crop size;
- ``saved_tensors_hooks`` sums the bytes autograd saves for the backward (float32, deduplicated
  by storage) at the stage's batch size and crop: the activation memory of a training step.

From those, with stated assumptions (``ASSUMPTIONS``; the effective throughput is
``--peak-tflops × --utilisation``), it derives GPU hours and peak GPU memory per stage for the
datasets' sizes, epochs, test-time-augmentation scales and the CAM strategies' step cost
(``results/strategy_cost.json``, ``results/ccam_cost.json``: measured on a CPU). CPU-bound stages
(dense CRF, affinity labels) are estimated from a one-core measurement of the CRF here. Every
number is an estimate: none was measured on a GPU.

    .venv/bin/python benchmarks/gpu_estimates.py            # results/gpu_estimates.{json,md}
    .venv/bin/python benchmarks/gpu_estimates.py --peak-tflops 989 --utilisation 0.3  # H100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from wsss.models.registry import create_model
from wsss.pipeline.graph import build_pipeline, run_config
from wsss.pipeline.rundir import RunDir

RESULTS = Path(__file__).resolve().parent / "results"
PRESETS = ("voc12-pnoc", "voc12-lpcam-irn", "coco14-lpcam-irn")
GIB = 2**30

# Images per split and a typical image (width × height), from the datasets' documentation.
DATASETS: dict[str, dict[str, Any]] = {
    "voc": {
        "splits": {"train_aug": 10_582, "train": 1_464, "val": 1_449},
        "image": (500, 375),
        "classes": 20,
        "labels_per_image": 1.5,  # present foreground classes, VOC average
    },
    "coco": {
        "splits": {"train": 82_783, "val": 40_504},
        "image": (640, 480),
        "classes": 80,
        "labels_per_image": 2.9,
    },
}

ASSUMPTIONS = {
    "amp_activation_factor": 0.5,  # bf16 autocast halves the saved activations, roughly
    "peak_temporaries": 1.3,  # peak = saved activations × this (workspaces, temporaries)
    "cuda_context_gib": 1.0,  # CUDA context + cuDNN workspace
    "sgd_state_per_param": 1,  # momentum buffer (Adam would be 2)
    "train_step_over_forward": "measured: forward + backward FLOPs on the meta device",
    # Activations saved per strategy step, × vanilla (Puzzle: the image and its four tiles in
    # one graph; OC-CSE: + the frozen OC on the erased image, backward to the mask; P-NOC's
    # NOC step is a separate phase and smaller than the classifier's).
    "strategy_activation_factor": {"vanilla": 1, "puzzle": 2, "occse": 2, "poc": 3, "pnoc": 3},
    "inference_pixels_per_call": 3.0e6,  # GPU map inference: up to 3 Mpx per forward call
    "walk_kernel_launch_s": 6e-6,  # per CUDA kernel (the sparse walk runs 71 per step)
    "gpu_bandwidth_gbs": 1500,  # effective HBM bandwidth for the walk's elementwise kernels
    "kmeans_tflops": 20.0,  # k-means matmuls in float32/TF32
    "kmeans_iterations": 30,  # typical; the cap is lpcam.max_iter
    "positions_per_image_os16": "ceil(W/16) × ceil(H/16) of the typical image",
    "affinity_crfs_per_image": 2,  # IRN: a high and a low foreground threshold
}


def tta_cost(scales: Sequence[float], flip: bool = True) -> float:
    """Image-sized forwards one test-time-augmented image costs: ``(1 + flip) × Σ s²``.

    A forward's cost is proportional to its pixels, so a scale ``s`` costs ``s²`` forwards.
    """
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive and non-empty, got {list(scales)}")
    return (2.0 if flip else 1.0) * float(sum(s * s for s in scales))


def _few_labels(ds: dict[str, Any]) -> int:
    """Labels of a typical image's CRF: its present classes and the background."""
    return round(ds["labels_per_image"]) + 1


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if is_dataclass(out):
        return [t for f in fields(out) for t in _tensors(getattr(out, f.name))]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


@dataclass
class ModelCost:
    params: int
    trainable: int
    fwd_flops_per_px: float  # forward FLOPs per input pixel
    step_flops_per_px: float  # forward + backward FLOPs per input pixel
    saved_bytes_per_px: float  # float32 bytes autograd saves per input pixel (training)


def measure_model(kind: str, crop: int, batch: int = 2, **kwargs: Any) -> ModelCost:
    """FLOPs and saved activations of ``create_model(kind, **kwargs)`` on the meta device."""
    with torch.device("meta"):
        model = create_model(kind, **kwargs)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    x = torch.empty(batch, 3, crop, crop, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    fwd = fc.get_total_flops()
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        return t

    with FlopCounterMode(display=False) as fc:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
        loss = sum(t.float().sum() for t in _tensors(out) if t.requires_grad)
        loss.backward()
    px = batch * crop * crop
    return ModelCost(
        params, trainable, fwd / px, fc.get_total_flops() / px, sum(seen.values()) / px
    )


def _crf_seconds(n_labels: int, iterations: int, preset: str, size: tuple[int, int]) -> float:
    """One dense CRF on a random ``size`` image on this CPU (one thread), or NaN."""
    try:
        from wsss.refine.crf import crf_labels, crf_params, crf_probs

        rng = np.random.default_rng(0)
        w, h = size
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        params = crf_params(preset, iterations=iterations)
        if preset == "deeplab":
            p = rng.random((n_labels, h, w)).astype(np.float32)
            fn: Callable[[], Any] = lambda: crf_probs(image, p / p.sum(0), params)  # noqa: E731
        else:
            labels = rng.integers(0, n_labels, (h, w))
            fn = lambda: crf_labels(image, labels, n_labels, params)  # noqa: E731
        fn()
        t = time.process_time()
        fn()
        return time.process_time() - t
    except Exception as e:  # pydensecrf2 missing: say so in the output
        print(f"CRF not measured: {e}")
        return float("nan")


class Estimator:
    """Turns the stage graph of one preset into per-stage estimates."""

    def __init__(self, preset: str, tflops: float, crf: dict[str, float]) -> None:
        self.preset, self.tflops, self.crf = preset, tflops, crf
        self.config = run_config(preset, [], {"data.root": "/nonexistent"})
        self.pipeline = build_pipeline(RunDir(Path("/nonexistent/run")), self.config)
        self.ds = DATASETS[self.config.data.format]
        self.rows: list[dict[str, Any]] = []
        self._models: dict[tuple, ModelCost] = {}
        strat = json.loads((RESULTS / "strategy_cost.json").read_text())["strategies"]
        ccam = json.loads((RESULTS / "ccam_cost.json").read_text())["tasks"]
        self.step_ratio = {k: v["ratio"] for k, v in strat.items()}
        self.ccam_ratio = {k: v["ratio"] for k, v in ccam.items()}

    def model(self, kind: str, crop: int, **kw: Any) -> ModelCost:
        key = (kind, crop, tuple(sorted(kw.items())))
        if key not in self._models:
            self._models[key] = measure_model(kind, crop, **kw)
        return self._models[key]

    def images(self, split: str) -> int:
        return self.ds["splits"][split]

    @property
    def image_px(self) -> int:
        w, h = self.ds["image"]
        return w * h

    def gpu_hours(self, flops: float) -> float:
        return flops / (self.tflops * 1e12) / 3600

    def _state_gib(self, m: ModelCost, frozen_extra: int = 0, trained_extra: int = 0) -> float:
        a = ASSUMPTIONS
        trained = m.trainable + trained_extra
        frozen = m.params - m.trainable + frozen_extra
        return (trained * (2 + a["sgd_state_per_param"]) + frozen) * 4 / GIB

    def _infer_mem(self, m: ModelCost, pixels: float) -> float:
        # No-grad inference keeps a few live activations, not the saved set: ~15 % of it
        # (the ratio of the CPU-measured 296 MB/Mpx of ResNet-50 OS16 inference, cam_tta.py,
        # to the saved bytes per Mpx measured here in float32).
        return (m.params * 4 + 0.15 * m.saved_bytes_per_px * pixels) / GIB + ASSUMPTIONS[
            "cuda_context_gib"
        ]

    def add(self, stage: str, what: str, m: ModelCost | None, **row: Any) -> None:
        base = {"stage": stage, "what": what}
        if m is not None:
            base |= {"params_m": m.params / 1e6, "trainable_m": m.trainable / 1e6}
        self.rows.append(base | row)

    # -------------------------------------------------------------------------- stages

    def train(self, s: Any) -> None:
        c = s.config
        task, crop, batch = c.train.task, c.data.crop_size, c.train.batch_size
        n = self.images(c.data.split) * c.train.epochs
        a = ASSUMPTIONS
        frozen_extra = trained_extra = 0
        if task == "cam":
            m = self.model(
                "cam_classifier",
                crop,
                backbone=c.model.backbone,
                num_classes=self.ds["classes"],
                output_stride=c.model.output_stride,
            )
            strategy = c.train.strategy
            mult = self.step_ratio.get(strategy, 1.0)
            act = a["strategy_activation_factor"].get(strategy, 1)
            if strategy in ("occse", "poc", "pnoc"):
                frozen_extra = m.params  # the ordinary classifier (OC)
            if strategy == "pnoc":
                trained_extra = m.params  # the NOC, trained in its own phase
            what = f"{strategy} classifier, {c.model.backbone} OS{c.model.output_stride}"
        elif task == "ccam":
            m = self.model(
                "ccam", crop, backbone=c.model.backbone, output_stride=c.model.output_stride
            )
            hinted = c.train.strategy_args.get("hints") is not None
            mult = self.ccam_ratio["ccam_h" if hinted else "ccam"]
            act, what = 1, f"C²AM{'-H' if hinted else ''}, {c.model.backbone}"
        elif task == "boundary":
            m = self.model("boundary_net", crop, backbone=c.model.backbone)
            mult, act, what = 1.0, 1, f"IRN boundary branch on a frozen {c.model.backbone}"
        elif task == "segmentation":
            arch = c.train.strategy_args.get("architecture", "deeplabv3plus")
            m = self.model(
                arch,
                crop,
                backbone=c.model.backbone,
                num_classes=self.ds["classes"] + 1,
                output_stride=c.model.output_stride,
            )
            mult, act = 1.0, 1
            what = f"{arch}, {c.model.backbone} OS{c.model.output_stride}"
        else:
            raise ValueError(f"no estimate for train.task={task}")
        flops = n * crop * crop * m.step_flops_per_px * mult
        saved = m.saved_bytes_per_px * crop * crop * batch * act / max(c.train.accumulate, 1)
        amp = a["amp_activation_factor"] if c.train.amp else 1.0
        mem = (
            saved * amp * a["peak_temporaries"] / GIB
            + self._state_gib(m, frozen_extra, trained_extra)
            + a["cuda_context_gib"]
        )
        self.add(
            s.name,
            f"train {what}; {c.train.epochs} ep × {self.images(c.data.split)} img, "
            f"batch {batch} of {crop}²" + (f", step × {mult:.2f}" if mult != 1 else ""),
            m,
            gflops_per_img=m.fwd_flops_per_px * crop * crop / 1e9,
            input=f"{crop}×{crop} crop",
            step_multiplier=mult,
            activations_fp32_gib=saved / GIB,
            state_gib=self._state_gib(m, frozen_extra, trained_extra),
            peak_gib=mem,
            flops=flops,
            gpu_hours=self.gpu_hours(flops),
        )

    def maps(self, s: Any, train_cfg: dict[str, Any]) -> None:
        c = train_cfg[s.classifier]
        kind = "ccam" if s.map_method == "ccam" else "cam_classifier"
        kw = {"num_classes": self.ds["classes"]} if kind == "cam_classifier" else {}
        m = self.model(
            kind,
            c.data.crop_size,
            backbone=c.model.backbone,
            output_stride=c.model.output_stride,
            **kw,
        )
        n = self.images(s.data.split)
        cost = tta_cost(s.scales)
        flops = n * self.image_px * cost * m.fwd_flops_per_px
        self.add(
            s.name,
            f"{s.map_method} maps of {n} img, scales {list(s.scales)} × flip "
            f"({cost:g} image-sized forwards)",
            m,
            gflops_per_img=m.fwd_flops_per_px * self.image_px / 1e9,
            input=f"{self.ds['image'][0]}×{self.ds['image'][1]} image",
            tta_forwards=cost,
            peak_gib=self._infer_mem(m, ASSUMPTIONS["inference_pixels_per_call"]),
            flops=flops,
            gpu_hours=self.gpu_hours(flops),
        )

    def lpcam_fit(self, s: Any, train_cfg: dict[str, Any]) -> None:
        c = train_cfg[s.classifier]
        m = self.model(
            "cam_classifier",
            c.data.crop_size,
            backbone=c.model.backbone,
            num_classes=self.ds["classes"],
            output_stride=c.model.output_stride,
        )
        n = self.images(s.data.split)
        pc = s.config
        w, h = self.ds["image"]
        positions = -(-w // 16) * -(-h // 16)
        per_class = n * self.ds["labels_per_image"] / self.ds["classes"]
        if pc.per_class is not None:
            per_class = min(per_class, pc.per_class)
        feats = per_class * positions  # one class's two sets together (foreground + context)
        if pc.max_features is not None:
            feats = min(feats, 2 * pc.max_features)
        dim = 2048
        fwd = n * self.image_px * m.fwd_flops_per_px
        km = self.ds["classes"] * 2 * feats * dim * pc.k * ASSUMPTIONS["kmeans_iterations"]
        gpu_h = self.gpu_hours(fwd) + km / (ASSUMPTIONS["kmeans_tflops"] * 1e12) / 3600
        # The largest class holds several times the mean; VOC person ≈ 5×, COCO person ≈ 15×.
        largest = 5 if self.config.data.format == "voc" else 15
        set_gib = min(feats * largest, n * positions) * dim * 4 / GIB
        # Host memory: every set of the classes of one pass is kept (on the CPU) until the
        # pass ends (classes_per_pass None: all classes in one pass).
        per_pass = pc.classes_per_pass or self.ds["classes"]
        host_gib = feats * per_pass * dim * 4 / GIB + set_gib
        self.add(
            s.name,
            f"LPCAM features of {n} img (scale 1) + cosine k-means (k={pc.k}, "
            f"{self.ds['classes']} classes × 2 sets, ~{ASSUMPTIONS['kmeans_iterations']} it.)",
            m,
            gflops_per_img=m.fwd_flops_per_px * self.image_px / 1e9,
            input=f"{w}×{h} image",
            kmeans_flops=km,
            feature_set_gib_largest_class=set_gib,
            host_ram_gib=host_gib,
            peak_gib=set_gib + self._infer_mem(m, self.image_px),
            flops=fwd + km,
            gpu_hours=gpu_h,
            note=f"host RAM ≈ {host_gib:,.0f} GiB: the features of every class of a pass "
            f"({per_pass} classes; lpcam.classes_per_pass) stay on the CPU until the pass ends, "
            f"≈ {feats * dim * 4 / GIB:,.1f} GiB per class on average; the largest class's "
            f"≈ {set_gib:,.0f} GiB go to the GPU for k-means (the peak column). "
            "lpcam.per_class / lpcam.max_features cap both",
        )

    def affinity(self, s: Any) -> None:
        n = self.images(s.data.split)
        labels = _few_labels(self.ds)
        crfs = ASSUMPTIONS["affinity_crfs_per_image"]
        per = self.crf.get(f"seeds_{labels}", float("nan")) * crfs
        cpu_h = n * per / 3600 if s.crf else 0.0
        self.add(
            s.name,
            f"affinity labels of {n} img"
            + (" with 2 dense CRFs each (CPU)" if s.crf else " (CPU)"),
            None,
            cpu_core_hours=cpu_h,
            gpu_hours=0.0,
            note=f"CPU: {s.workers} workers ⇒ ≈ {cpu_h / max(s.workers, 1):.2f} h wall",
        )

    def random_walk(self, s: Any, boundary_cfg: Any) -> None:
        m = self.model(
            "boundary_net", boundary_cfg.data.crop_size, backbone=boundary_cfg.model.backbone
        )
        n = self.images(s.data.split)
        side = s.pad_to or max(self.ds["image"])
        fwd = n * 2 * side * side * m.fwd_flops_per_px  # boundary map with flip at pad_to
        grid = (side // 4) ** 2
        k = self.ds["labels_per_image"] + 1
        a = ASSUMPTIONS
        steps = 2**s.exp_times
        kernels = 71  # pad + zeros + 69 neighbour products per step
        batch = s.batch_size
        bytes_per_kernel = 3 * batch * k * grid * 4
        per_kernel = max(
            a["walk_kernel_launch_s"], bytes_per_kernel / (a["gpu_bandwidth_gbs"] * 1e9)
        )
        walk_s = n / batch * steps * kernels * per_kernel
        gpu_h = self.gpu_hours(fwd) + walk_s / 3600
        labels = _few_labels(self.ds)
        cpu_h = n * self.crf.get(f"rw_{labels}", float("nan")) / 3600 if s.crf else 0.0
        self.add(
            s.name,
            f"boundary maps (flip, padded to {side}²) + sparse random walk "
            f"({steps} steps, batch {batch}) of {n} img"
            + (" + 1-iteration CRF (CPU)" if s.crf else ""),
            m,
            gflops_per_img=2 * side * side * m.fwd_flops_per_px / 1e9,
            input=f"{side}×{side} padded image, flip",
            walk_gpu_seconds=walk_s,
            cpu_core_hours=cpu_h,
            peak_gib=self._infer_mem(m, 2 * side * side * batch),
            flops=fwd,
            gpu_hours=gpu_h,
        )

    def predict(self, s: Any, seg_cfg: Any) -> None:
        c = seg_cfg
        arch = c.train.strategy_args.get("architecture", "deeplabv3plus")
        m = self.model(
            arch,
            c.data.crop_size,
            backbone=c.model.backbone,
            num_classes=self.ds["classes"] + 1,
            output_stride=c.model.output_stride,
        )
        n = self.images(s.data.split)
        inf = s.infer
        cost = tta_cost(inf.scales, inf.flip)
        flops = n * self.image_px * cost * m.fwd_flops_per_px
        labels = self.ds["classes"] + 1
        cpu_h = n * self.crf.get(f"deeplab_{labels}", float("nan")) / 3600 if inf.crf else 0.0
        biggest = max(inf.scales) ** 2 * self.image_px * (2 if inf.flip else 1)
        self.add(
            s.name,
            f"segmentation of {n} {s.data.split} img, scales {list(inf.scales)}"
            f"{' × flip' if inf.flip else ''} ({cost:g} forwards)"
            + (f" + dense CRF, {labels} labels (CPU)" if inf.crf else ""),
            m,
            gflops_per_img=m.fwd_flops_per_px * self.image_px / 1e9,
            input=f"{self.ds['image'][0]}×{self.ds['image'][1]} image",
            tta_forwards=cost,
            cpu_core_hours=cpu_h,
            peak_gib=self._infer_mem(m, biggest),
            flops=flops,
            gpu_hours=self.gpu_hours(flops),
        )

    def run(self) -> list[dict[str, Any]]:
        train_cfg = {
            s.classifier: s.config
            for s in self.pipeline.stages
            if type(s).__name__ in ("TrainStage", "_BoundaryTrainStage")
        }
        for s in self.pipeline.stages:
            kind = type(s).__name__
            if kind in ("TrainStage", "_BoundaryTrainStage"):
                self.train(s)
            elif kind == "MapsStage":
                self.maps(s, train_cfg)
            elif kind == "PrototypeStage":
                self.lpcam_fit(s, train_cfg)
            elif kind == "AffinityStage":
                self.affinity(s)
            elif kind == "RandomWalkStage":
                self.random_walk(s, train_cfg[s.boundary])
            elif kind == "SegmentationStage":
                self.predict(s, train_cfg[s.network])
            else:
                self.add(s.name, "scoring / report (CPU, minutes)", None, gpu_hours=0.0)
        return self.rows


def measure_crf(fmt: str) -> dict[str, float]:
    """CPU seconds of the pipeline's dense CRFs on one typical image of dataset ``fmt``."""
    ds = DATASETS[fmt]
    few = _few_labels(ds)
    out = {
        f"seeds_{few}": _crf_seconds(few, 10, "seeds", ds["image"]),
        f"rw_{few}": _crf_seconds(few, 1, "rw", ds["image"]),
        f"deeplab_{ds['classes'] + 1}": _crf_seconds(ds["classes"] + 1, 10, "deeplab", ds["image"]),
    }
    print(fmt, "CRF seconds:", {k: round(v, 3) for k, v in out.items()})
    return out


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


def _hours(row: dict[str, Any]) -> str:
    gpu = row.get("gpu_hours", 0.0)
    text = "–" if not gpu else (f"{gpu:.2f}" if gpu >= 0.01 else "< 0.01")
    cpu = row.get("cpu_core_hours")
    if cpu:
        text += f" + {cpu:.1f} CPU core-h"
    return text


def markdown(results: dict[str, Any]) -> str:
    a = results["assumptions"]
    lines = [
        "# GPU time and memory per stage (estimates)",
        "",
        "**Every number is an estimate from the model sizes; none was measured on a GPU.** "
        "Generated by `benchmarks/gpu_estimates.py`. FLOPs and saved activations are counted "
        "on models built on torch's meta device at each stage's input size; GPU hours = "
        f"FLOPs ÷ {results['effective_tflops']:.0f} TFLOP/s effective "
        f"({results['peak_tflops']:.0f} peak × {results['utilisation']:.0%} utilisation, "
        "bf16 AMP), data loading and validation excluded. Peak memory of a training stage = "
        f"float32 saved activations × {a['amp_activation_factor']} (AMP) × "
        f"{a['peak_temporaries']} (temporaries) + weights, gradients and SGD momentum (float32) + "
        f"{a['cuda_context_gib']:g} GiB context. Test-time augmentation costs "
        "(1 + flip) × Σ scale² image-sized forwards. CAM strategies' steps cost the measured CPU "
        "ratio to a vanilla step (`results/strategy_cost.json`, `results/ccam_cost.json`). "
        "CPU stages (dense CRF) use one measurement of pydensecrf on a random image, one core "
        f"({results['crf_seconds']}).",
        "",
    ]
    for preset, rows in results["presets"].items():
        total = sum(r.get("gpu_hours", 0.0) for r in rows)
        cpu = sum(r.get("cpu_core_hours", 0.0) or 0.0 for r in rows)
        lines += [
            f"## {preset}",
            "",
            "| stage | what runs | params (M) | GFLOPs/img (input) | peak GPU memory (GiB) "
            "| GPU hours |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in rows:
            gfl = r.get("gflops_per_img")
            gfl_text = f"{gfl:,.0f} ({r['input']})" if gfl is not None else "–"
            lines.append(
                f"| {r['stage']} | {r['what']} | {_fmt(r.get('params_m'))} | {gfl_text} "
                f"| {_fmt(r.get('peak_gib'))} | {_hours(r)} |"
            )
        lines += [
            f"| **total** | | | | | **{total:.1f}** + {cpu:.1f} CPU core-h |",
            "",
        ]
        notes = [f"- {r['stage']}: {r['note']}" for r in rows if r.get("note")]
        lines += notes + ([""] if notes else [])
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS))
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=312.0,
        help="dense bf16 peak of the GPU (A100: 312, H100 SXM: 989)",
    )
    ap.add_argument(
        "--utilisation",
        type=float,
        default=0.3,
        help="fraction of the peak a training/inference step reaches",
    )
    ap.add_argument("--no-crf", action="store_true", help="skip the CPU CRF measurement")
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu_estimates.json")
    ap.add_argument("--md", type=Path, default=RESULTS / "gpu_estimates.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tflops = args.peak_tflops * args.utilisation
    crf: dict[str, dict[str, float]] = {}
    results: dict[str, Any] = {
        "benchmark": "gpu_estimates",
        "estimate": "from model sizes on the meta device; nothing measured on a GPU",
        "peak_tflops": args.peak_tflops,
        "utilisation": args.utilisation,
        "effective_tflops": tflops,
        "assumptions": ASSUMPTIONS,
        "datasets": DATASETS,
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
        },
        "presets": {},
    }
    for preset in args.presets:
        est = Estimator(preset, tflops, {})
        fmt = est.config.data.format
        if fmt not in crf:
            crf[fmt] = {} if args.no_crf else measure_crf(fmt)
        est.crf = crf[fmt]
        results["presets"][preset] = est.run()
        print(preset, f"{sum(r.get('gpu_hours', 0) for r in est.rows):.1f} GPU h")
    results["crf_seconds"] = {f: {k: round(v, 3) for k, v in d.items()} for f, d in crf.items()}
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    args.md.write_text(markdown(results) + "\n")
    print(f"wrote {args.out} and {args.md}")


if __name__ == "__main__":
    main()
