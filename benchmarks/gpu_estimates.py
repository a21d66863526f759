"""Time and memory each stage of the real presets needs on one GPU, estimated from model sizes.

Nothing here runs on a GPU. For each preset (``voc12-pnoc``, ``voc12-lpcam-irn``,
``coco14-lpcam-irn``) the stage graph is built from the preset
(:func:`wsss.pipeline.build_pipeline`) and every network it trains or runs is built on
the ``meta`` device (shapes only, no memory, no arithmetic), where

- torch's ``FlopCounterMode`` counts the FLOPs (2 × multiply-adds) of one forward, and of one
  forward + backward of the summed outputs, at the stage's crop size;
- ``saved_tensors_hooks`` sums the bytes autograd saves for the backward (each storage once,
  weights excluded; in float32, and in bfloat16 for AMP: autocast does not act on meta tensors,
  so the model and input are cast) at the stage's batch size and crop: the activation memory
  of a training step.

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
from gpu_estimates_report import markdown
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from wsss.models.registry import create_model
from wsss.pipeline import build_pipeline, run_config
from wsss.pipeline.rundir import RunDir

RESULTS = Path(__file__).resolve().parent / "results"
PRESETS = ("voc12-pnoc", "voc12-lpcam-irn", "coco14-lpcam-irn")
GIB = 2**30

# Images per split, a typical image (width × height), classes per image (the COCO paper's
# statistics: 1.4 for VOC, 3.5 for COCO) and the share of images with the commonest class.
DATASETS: dict[str, dict[str, Any]] = {
    "voc": {
        "splits": {"train_aug": 10_582, "train": 1_464, "val": 1_449},
        "image": (500, 375),
        "classes": 20,
        "labels_per_image": 1.4,  # foreground classes per image
        "largest_class_share": 0.35,  # images with a person
    },
    "coco": {
        "splits": {"train": 82_783, "val": 40_504},
        "image": (640, 480),
        "classes": 80,
        "labels_per_image": 3.5,
        "largest_class_share": 0.54,
    },
}

ASSUMPTIONS = {
    "amp_activations": "measured with the model and input in bfloat16 (autocast's dtype)",
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
    "lpcam_feature_dim": 2048,  # ResNet-50 layer 4
    "affinity_crfs": 2,  # per image, IRN: a high and a low foreground threshold
}


def tta_cost(scales: Sequence[float], flip: bool = True) -> float:
    """Image-sized forwards one test-time-augmented image costs: ``(1 + flip) × Σ s²``.

    A forward's cost is proportional to its pixels, so a scale ``s`` costs ``s²`` forwards.
    """
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive and non-empty, got {list(scales)}")
    return (2.0 if flip else 1.0) * float(sum(s * s for s in scales))


def _result(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


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
    saved_bytes_per_px_bf16: float  # the same with the model and input in bfloat16


def _saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd saves for the backward of ``model(x)``: each storage once, weights
    excluded (they are counted with the optimiser state)."""
    weights = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in weights:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values())


def measure_model(kind: str, crop: int, batch: int = 2, **kwargs: Any) -> ModelCost:
    """FLOPs and saved activations of ``create_model(kind, **kwargs)`` on the meta device.

    The bfloat16 pass stands in for autocast, which does not act on meta tensors: under bf16
    autocast the convolutions' outputs, hence nearly all saved activations, are bf16.
    """
    with torch.device("meta"):
        model = create_model(kind, **kwargs)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    x = torch.empty(batch, 3, crop, crop, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    fwd = fc.get_total_flops()
    saved = _saved_bytes(model, x)
    with FlopCounterMode(display=False) as fc:
        loss = sum(t.float().sum() for t in _tensors(model(x)) if t.requires_grad)
        loss.backward()
    step = fc.get_total_flops()
    saved_bf16 = _saved_bytes(model.to(torch.bfloat16), x.to(torch.bfloat16))
    px = batch * crop * crop
    return ModelCost(params, trainable, fwd / px, step / px, saved / px, saved_bf16 / px)


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
    """Turns the stage graph of one preset into per-stage estimates (rows of a table)."""

    def __init__(self, preset: str, tflops: float, crf: dict[str, float]) -> None:
        self.preset, self.tflops, self.crf = preset, tflops, crf
        self.config = run_config(preset, [], {"data.root": "/nonexistent"})
        self.pipeline = build_pipeline(RunDir(Path("/nonexistent/run")), self.config)
        self.ds = DATASETS[self.config.data.format]
        self.rows: list[dict[str, Any]] = []
        self._models: dict[tuple, ModelCost] = {}
        self.step_ratio = {k: v["ratio"] for k, v in _result("strategy_cost")["strategies"].items()}
        self.ccam_ratio = {k: v["ratio"] for k, v in _result("ccam_cost")["tasks"].items()}

    def model(self, kind: str, crop: int, **kw: Any) -> ModelCost:
        key = (kind, crop, tuple(sorted(kw.items())))
        if key not in self._models:
            self._models[key] = measure_model(kind, crop, **kw)
        return self._models[key]

    def net(self, c: Any) -> tuple[str, ModelCost]:
        """The network a training configuration trains, measured at its crop size."""
        task, m = c.train.task, c.model
        kw: dict[str, Any] = {"backbone": m.backbone}
        if task == "cam":
            kind, kw["num_classes"] = "cam_classifier", self.ds["classes"]
        elif task == "ccam":
            kind = "ccam"
        elif task == "boundary":
            return "boundary_net", self.model("boundary_net", c.data.crop_size, **kw)
        elif task == "segmentation":
            kind = c.train.strategy_args.get("architecture", "deeplabv3plus")
            kw["num_classes"] = self.ds["classes"] + 1
        else:
            raise ValueError(f"no estimate for train.task={task}")
        return kind, self.model(kind, c.data.crop_size, output_stride=m.output_stride, **kw)

    def images(self, split: str) -> int:
        return self.ds["splits"][split]

    @property
    def image_px(self) -> int:
        w, h = self.ds["image"]
        return w * h

    @property
    def image_text(self) -> str:
        return "{}×{} image".format(*self.ds["image"])

    def gpu_hours(self, flops: float) -> float:
        return flops / (self.tflops * 1e12) / 3600

    @staticmethod
    def state_gib(m: ModelCost, frozen_extra: int = 0, trained_extra: int = 0) -> float:
        """Float32 weights, plus gradients and SGD momentum of the trained ones."""
        trained = m.trainable + trained_extra
        frozen = m.params - m.trainable + frozen_extra
        return (trained * (2 + ASSUMPTIONS["sgd_state_per_param"]) + frozen) * 4 / GIB

    def infer_gib(self, m: ModelCost, pixels: float) -> float:
        """GPU memory of no-grad inference on ``pixels`` input pixels at once.

        Calibrated on the one inference measurement there is: ResNet-50 OS16 map inference on
        the CPU rises by 296 MB per Mpx of its largest input (``cam_tta_memory_resnet50.json``);
        another model is scaled by its saved-activation bytes per pixel relative to that one.
        """
        ref = self.model("cam_classifier", 512, backbone="resnet50", num_classes=20)
        mb_per_mpx = _result("cam_tta_memory_resnet50")["mb_per_input_mpx"]
        live = mb_per_mpx * 2**20 / 1e6 * m.saved_bytes_per_px / ref.saved_bytes_per_px
        return (m.params * 4 + live * pixels) / GIB + ASSUMPTIONS["cuda_context_gib"]

    def add(self, stage: str, what: str, m: ModelCost | None, **row: Any) -> None:
        base = {"stage": stage, "what": what}
        if m is not None:
            base |= {"params_m": m.params / 1e6, "trainable_m": m.trainable / 1e6}
        self.rows.append(base | row)

    def inference(
        self,
        stage: Any,
        m: ModelCost,
        n: int,
        what: str,
        forwards: float,
        peak_px: float,
        **row: Any,
    ) -> None:
        """A stage of ``forwards`` image-sized forwards on each of ``n`` images."""
        flops = n * self.image_px * forwards * m.fwd_flops_per_px
        self.add(
            stage.name, what, m,
            gflops_per_img=m.fwd_flops_per_px * self.image_px / 1e9, input=self.image_text,
            forwards_per_img=forwards, peak_gib=self.infer_gib(m, peak_px), flops=flops,
            gpu_hours=self.gpu_hours(flops) + row.pop("extra_gpu_hours", 0.0), **row,
        )  # fmt: skip

    # -------------------------------------------------------------------------- stages

    def train(self, s: Any) -> None:
        c, a = s.config, ASSUMPTIONS
        crop, batch, epochs = c.data.crop_size, c.train.batch_size, c.train.epochs
        kind, m = self.net(c)
        mult, act, frozen_extra, trained_extra = 1.0, 1, 0, 0
        what = f"{kind}, {c.model.backbone}"
        if c.train.task == "cam":
            strategy = c.train.strategy
            mult = self.step_ratio.get(strategy, 1.0)
            act = a["strategy_activation_factor"].get(strategy, 1)
            frozen_extra = m.params if strategy in ("occse", "poc", "pnoc") else 0  # the OC
            trained_extra = m.params if strategy == "pnoc" else 0  # the NOC, its own phase
            what = f"{strategy} {what}"
        elif c.train.task == "ccam":
            hinted = c.train.strategy_args.get("hints") is not None
            mult = self.ccam_ratio["ccam_h" if hinted else "ccam"]
            what = f"C²AM{'-H' if hinted else ''}, {c.model.backbone}"
        elif c.train.task == "boundary":
            what = f"IRN boundary branch on a frozen {c.model.backbone}"
        if kind != "boundary_net":
            what += f" OS{c.model.output_stride}"
        n = self.images(c.data.split)
        flops = epochs * n * crop * crop * m.step_flops_per_px * mult
        # Validation: classifiers at the crop size (long side resized, padded square); the
        # segmentation and saliency networks one forward at each image's own size.
        vals = epochs // c.train.val_every if c.data.val_split and c.train.val_every else 0
        val_n = self.images(c.data.val_split) if vals else 0
        val_px = crop * crop if c.train.task == "cam" else self.image_px
        val_flops = vals * val_n * val_px * m.fwd_flops_per_px
        per_px = m.saved_bytes_per_px_bf16 if c.train.amp else m.saved_bytes_per_px
        saved = per_px * crop * crop * batch * act  # train.batch_size is one micro-batch
        state = self.state_gib(m, frozen_extra, trained_extra)
        self.add(
            s.name,
            f"train {what}; {epochs} ep × {n} img, batch {batch} of {crop}²"
            + (f" × {c.train.accumulate} accumulated" if c.train.accumulate > 1 else "")
            + (f", step × {mult:.2f}" if mult != 1 else "")
            + (f"; {vals} validations of {val_n} img" if vals else ""),
            m,
            gflops_per_img=m.fwd_flops_per_px * crop * crop / 1e9,
            input=f"{crop}×{crop} crop",
            step_multiplier=mult,
            activation_factor=act,
            activations_gib=saved / GIB,
            activations_dtype="bfloat16" if c.train.amp else "float32",
            state_gib=state,
            peak_gib=saved * a["peak_temporaries"] / GIB + state + a["cuda_context_gib"],
            flops=flops + val_flops,
            validation_gpu_hours=self.gpu_hours(val_flops),
            gpu_hours=self.gpu_hours(flops + val_flops),
        )

    def maps(self, s: Any, c: Any) -> None:
        _, m = self.net(c)
        n, cost = self.images(s.data.split), tta_cost(s.scales)
        what = f"{s.map_method} maps of {n} img, scales {list(s.scales)} × flip"
        self.inference(s, m, n, what, cost, ASSUMPTIONS["inference_pixels_per_call"])

    def lpcam_fit(self, s: Any, c: Any) -> None:
        _, m = self.net(c)
        a, pc, ds = ASSUMPTIONS, s.config, self.ds
        n = self.images(s.data.split)
        stride = c.model.output_stride
        positions = -(-ds["image"][0] // stride) * -(-ds["image"][1] // stride)
        # A class's two sets together hold every position of the images that have the class.
        per_class = n * ds["labels_per_image"] / ds["classes"]
        largest = n * ds["largest_class_share"]
        if pc.per_class is not None:
            per_class, largest = min(per_class, pc.per_class), min(largest, pc.per_class)
            n = min(n, ds["classes"] * pc.per_class)  # only the sampled images' features
        feats, big = per_class * positions, largest * positions
        if pc.max_features is not None:
            feats, big = min(feats, 2 * pc.max_features), min(big, 2 * pc.max_features)
        dim = a["lpcam_feature_dim"]
        km = ds["classes"] * feats * dim * pc.k * 2 * a["kmeans_iterations"]
        set_gib = big * dim * 4 / GIB
        per_pass = pc.classes_per_pass or ds["classes"]
        host_gib = feats * per_pass * dim * 4 / GIB + set_gib  # + one concatenation copy
        kmeans = next(r for r in _result("lpcam_kmeans")["rows"] if r["method"] == "wsss-reference")
        cpu_km = ds["classes"] * feats * kmeans["seconds_per_iter"] / kmeans["n"]
        cpu_km *= a["kmeans_iterations"] / 3600
        self.inference(
            s, m, n,
            f"LPCAM features of {n:,} img (scale 1) + cosine k-means (k={pc.k}, "
            f"{ds['classes']} classes × 2 sets, ~{a['kmeans_iterations']} it.)",
            1.0, 0.0,
            extra_gpu_hours=km / (a["kmeans_tflops"] * 1e12) / 3600,
            kmeans_flops=km, largest_class_features_gib=set_gib, host_ram_gib=host_gib,
            note=f"host RAM ≈ {host_gib:,.0f} GiB: the features of every class of a pass "
            f"({per_pass} classes; lpcam.classes_per_pass) stay on the CPU until the pass "
            f"ends, ≈ {feats * dim * 4 / GIB:,.1f} GiB per class on average; the largest "
            f"class's (≤ {set_gib:,.0f} GiB) go to the GPU for k-means (in the peak column). "
            "lpcam.per_class / lpcam.max_features cap both. The same k-means on one CPU core: "
            f"≈ {cpu_km:,.1f} h (lpcam_kmeans.json's seconds per iteration and feature)",
        )  # fmt: skip
        self.rows[-1]["peak_gib"] += set_gib

    def affinity(self, s: Any) -> None:
        n, labels = self.images(s.data.split), _few_labels(self.ds)
        per = self.crf.get(f"seeds_{labels}", float("nan")) * ASSUMPTIONS["affinity_crfs"]
        cpu_h = n * per / 3600 if s.crf else 0.0
        self.add(
            s.name,
            f"affinity labels of {n} img" + (", 2 dense CRFs each (CPU)" if s.crf else " (CPU)"),
            None,
            cpu_core_hours=cpu_h,
            gpu_hours=0.0,
            note=f"{s.workers} CPU workers: ≈ {cpu_h / max(s.workers, 1):.1f} h wall",
        )

    def random_walk(self, s: Any, c: Any) -> None:
        _, m = self.net(c)
        a, n, batch = ASSUMPTIONS, self.images(s.data.split), s.batch_size
        side = s.pad_to or max(self.ds["image"])
        # Per step: a pad, a zero fill and 69 neighbour products on batch × K × grid floats.
        steps, kernels = 2**s.exp_times, 71
        moved = 3 * batch * (self.ds["labels_per_image"] + 1) * (side // 4) ** 2 * 4
        per_kernel = max(a["walk_kernel_launch_s"], moved / (a["gpu_bandwidth_gbs"] * 1e9))
        walk_s = n / batch * steps * kernels * per_kernel
        cpu_h = n * self.crf.get(f"rw_{_few_labels(self.ds)}", float("nan")) / 3600
        flops = n * 2 * side * side * m.fwd_flops_per_px
        self.add(
            s.name,
            f"boundary maps (flip, padded to {side}²) + sparse random walk ({steps} steps, "
            f"batch {batch}) of {n} img" + (" + 1-iteration CRF (CPU)" if s.crf else ""),
            m,
            gflops_per_img=2 * side * side * m.fwd_flops_per_px / 1e9,
            input=f"{side}×{side} padded image, flip",
            walk_gpu_seconds=walk_s,
            cpu_core_hours=cpu_h if s.crf else 0.0,
            peak_gib=self.infer_gib(m, 2 * side * side * batch),
            flops=flops,
            gpu_hours=self.gpu_hours(flops) + walk_s / 3600,
        )

    def predict(self, s: Any, c: Any) -> None:
        kind, m = self.net(c)
        n, inf = self.images(s.data.split), s.infer
        cost, labels = tta_cost(inf.scales, inf.flip), self.ds["classes"] + 1
        cpu_h = n * self.crf.get(f"deeplab_{labels}", float("nan")) / 3600 if inf.crf else 0.0
        what = (
            f"{kind} on {n} {s.data.split} img, scales {list(inf.scales)}"
            + (" × flip" if inf.flip else "")
            + (f" + dense CRF, {labels} labels (CPU)" if inf.crf else "")
        )
        biggest = max(inf.scales) ** 2 * self.image_px * (2 if inf.flip else 1)
        self.inference(s, m, n, what, cost, biggest, cpu_core_hours=cpu_h)

    def run(self) -> list[dict[str, Any]]:
        stages = self.pipeline.stages
        cfg = {s.classifier: s.config for s in stages if hasattr(s, "classifier")
               and hasattr(getattr(s, "config", None), "train")}  # fmt: skip
        for s in stages:
            kind = type(s).__name__
            if kind in ("TrainStage", "_BoundaryTrainStage"):
                self.train(s)
            elif kind == "MapsStage":
                self.maps(s, cfg[s.classifier])
            elif kind == "PrototypeStage":
                self.lpcam_fit(s, cfg[s.classifier])
            elif kind == "AffinityStage":
                self.affinity(s)
            elif kind == "RandomWalkStage":
                self.random_walk(s, cfg[s.boundary])
            elif kind == "SegmentationStage":
                self.predict(s, cfg[s.network])
            else:
                self.add(s.name, "scoring / report (CPU)", None, gpu_hours=0.0)
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
