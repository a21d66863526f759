"""A full report from synthetic values: 8 seed methods and every later stage, on VOC's classes.

Used by the report tests and to look at the page in a browser (docs/report.md)::

    PYTHONPATH=src python tests/report_sample.py OUT_DIR     # writes OUT_DIR/report.html
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from wsss.data.base import SegmentationDataset
from wsss.io.maps import ClassMaps, save_class_maps
from wsss.io.masks import save_mask_png
from wsss.report import ExampleColumn, ExampleSet, ReportInputs, write_report

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]  # fmt: skip
SEED_METHODS = ("cam", "puzzle", "occse", "poc", "pnoc", "pnoc_ls", "lpcam", "cam_saliency")


class SampleDataset(SegmentationDataset):
    """In-memory split: ``count`` images of 48×64, one or two rectangles of a class each,
    a 255 band on each object's top edge."""

    def __init__(self, split: str, count: int, seed: int) -> None:
        self.root, self.split, self.classes = Path("."), split, list(VOC_CLASSES)
        self.ids = [f"{split}_{i:03d}" for i in range(count)]
        rng = np.random.default_rng(seed)
        self.masks, self.images = {}, {}
        for sample_id in self.ids:
            mask = np.zeros((48, 64), np.uint8)
            for _ in range(rng.integers(1, 3)):
                y, x = rng.integers(2, 28), rng.integers(2, 40)
                h, w = rng.integers(10, 20), rng.integers(12, 24)
                mask[y : y + h, x : x + w] = rng.integers(1, len(VOC_CLASSES) + 1)
                mask[y, x : x + w] = 255
            image = rng.integers(90, 140, (48, 64, 3)).astype(np.uint8)
            colour = (self.palette[mask] // 2 + 60).astype(np.uint8)
            image[mask > 0] = colour[mask > 0]
            self.masks[sample_id], self.images[sample_id] = mask, image

    def load_image(self, sample_id: str) -> np.ndarray:
        return self.images[sample_id]

    def load_mask(self, sample_id: str) -> np.ndarray:
        return self.masks[sample_id]

    def load_label(self, sample_id: str) -> np.ndarray:
        present = np.unique(self.masks[sample_id])
        label = np.zeros(len(self.classes), np.float32)
        label[[k - 1 for k in present if 0 < k < 255]] = 1
        return label


def _blurred(mask: np.ndarray, key: int, shift: int) -> np.ndarray:
    """A soft map of class ``key``: the object shifted by ``shift`` pixels, box-blurred."""
    plane = np.roll((mask == key).astype(np.float32), shift, axis=1)
    for axis in (0, 1):
        plane = (np.roll(plane, 2, axis) + plane + np.roll(plane, -2, axis)) / 3
    return plane / max(float(plane.max()), 1e-6)


def _write_files(out: Path, train: SampleDataset, val: SampleDataset) -> None:
    rng = np.random.default_rng(1)
    for i, method in enumerate(("cam", "pnoc", "lpcam")):
        for sample_id in train.ids:
            mask = train.load_mask(sample_id)
            keys = np.flatnonzero(train.load_label(sample_id)) + 1
            hr = np.stack([_blurred(mask, k, 3 - 2 * i) for k in keys]).astype(np.float32)
            hr *= 1.0 - 0.2 * i  # weaker peaks: the seed masks differ between methods
            save_class_maps(out / "maps" / method / f"{sample_id}.npz", ClassMaps(keys, hr, hr))
    for sample_id in train.ids:
        mask = train.load_mask(sample_id)
        sal = _blurred(np.where(mask == 255, 0, mask > 0), 1, 1)[None]
        save_class_maps(out / "saliency" / f"{sample_id}.npz", ClassMaps([1], sal, sal))
        band = mask.copy()
        edge = (np.roll(mask, 2, 0) != mask) | (np.roll(mask, 2, 1) != mask)
        band[edge] = 255
        save_mask_png(out / "affinity" / "cam" / f"{sample_id}.png", band)
        pseudo = mask.copy()
        pseudo[pseudo == 255] = 0
        pseudo = np.roll(pseudo, int(rng.integers(-3, 4)), axis=1)
        save_mask_png(out / "pseudo" / "rw_cam" / f"{sample_id}.png", pseudo)
        pred = np.where(mask == 255, 0, mask).astype(np.uint8)
        pred[(np.roll(mask, 1, 0) == 0) & (mask > 0) & (mask < 255)] = 0
        save_mask_png(out / "report_files" / "train" / f"{sample_id}.png", pred)
    for sample_id in val.ids:
        pred = val.load_mask(sample_id).copy()
        pred[pred == 255] = 0
        if rng.random() < 0.3:  # a few confused images
            pred[pred > 0] = rng.integers(1, len(VOC_CLASSES) + 1)
        save_mask_png(out / "segmentation" / f"{sample_id}.png", pred)


def _per_class(rng: np.random.Generator, level: float) -> dict:
    out = {}
    for name in ["background", *VOC_CLASSES]:
        iou = float(np.clip(rng.normal(level, 12), 2, 98))
        fp = float(rng.uniform(0, 100 - iou))
        out[name] = {
            "iou": iou,
            "fp": fp,
            "fn": 100 - iou - fp,
            "precision": float(rng.uniform(40, 95)),
            "recall": float(rng.uniform(40, 95)),
        }
    return out


def _sweep(peak: float, top: float, keys=("miou", "fp", "fn", "precision", "recall")) -> list:
    rows = []
    for t in np.round(np.arange(0.05, 0.801, 0.05), 2):
        row = {"threshold": float(t), "miou": top - 180 * (t - peak) ** 2}
        row.update({"precision": 35 + 60 * t, "recall": 95 - 70 * t, "fp": 30 - 25 * t})
        row["fn"] = 10 + 40 * t
        rows.append({k: v for k, v in row.items() if k == "threshold" or k in keys})
    return rows


def sample_results(methods: int = 8, seed: int = 0) -> dict:
    """``results.json`` of a full run: ``methods`` seed entries and every later kind."""
    rng = np.random.default_rng(seed)
    results = {}
    for i, name in enumerate(SEED_METHODS[:methods]):
        top, peak = 45 + 2.5 * i, 0.2 + 0.03 * i
        fixed = top - 180 * (0.3 - peak) ** 2
        entry = {
            "split": "train",
            "num_images": 1464,
            "threshold": 0.3,
            "oracle": False,
            "miou": fixed,
            "fp": 20.0 + i,
            "fn": 25.0 - i,
            "precision": 60.0 + i,
            "recall": 70.0 - i,
            "head_recall": 95.0 - i,
            "body_recall": 40.0 + 3 * i,
            "body_near_recall": 50.0 + 3 * i,
            "body_far_recall": 30.0 + 3 * i,
            "context_fp": 15.0 - i,
            "background_fp": 3.0,
            "per_class": _per_class(rng, fixed),
            "sweep": _sweep(peak, top),
        }
        entry["best"] = {
            "threshold": round(peak, 2),
            "oracle": True,
            "miou": top,
            "fp": 18.0,
            "fn": 22.0,
            "precision": 62.0,
            "recall": 72.0,
            "per_class": _per_class(rng, top),
        }
        results[name] = entry
    for name, top in (("saliency_c2am", 61.0), ("saliency_c2am_h", 68.5)):
        rows = _sweep(0.3, top, ("miou", "precision", "recall"))
        results[name] = {
            "protocol": "binary",
            **rows[3],
            "best": {**max(rows, key=lambda r: r["miou"]), "oracle": True},
            "sweep": rows,
            "split": "train",
        }
    common = {"split": "train", "num_images": 1464, "fp": 12.0, "fn": 20.0, "recall": 70.0}
    for name, miou in (("affinity_cam", 55.0), ("affinity_lpcam", 58.0)):
        results[name] = {**common, "miou": miou, "precision": 88.0, "ignored": 31.5}
        results[name]["per_class"] = _per_class(rng, miou)
    for name, miou in (("rw_cam", 66.1), ("rw_lpcam", 68.3)):
        results[name] = {**common, "miou": miou, "precision": 75.0}
        results[name]["per_class"] = _per_class(rng, miou)
    results["segmentation"] = {
        "split": "val",
        "num_images": 1449,
        "miou": 70.2,
        "fp": 10.0,
        "fn": 15.0,
        "precision": 80.0,
        "recall": 82.0,
        "per_class": _per_class(rng, 70.2),
    }
    return results


def sample_training(steps: int = 60) -> dict:
    """Metrics records of three training runs (steps with loss/lr, validations)."""
    runs = {}
    for name, extra in (("cam", None), ("pnoc", "cls_loss"), ("segmentation", None)):
        records = []
        for step in range(5, steps + 1, 5):
            record = {"step": step, "epoch": step // 20, "loss": 2.0 * np.exp(-step / 25) + 0.1}
            if extra:
                record[extra] = 0.7 * record["loss"]
            record["lr"] = 0.1 * (1 - step / (steps + 1)) ** 0.9
            records.append(record)
            if step % 20 == 0:
                score = 1 - np.exp(-step / 30)
                key = "val/miou" if name == "segmentation" else "val/map"
                val = {"step": step, "epoch": step // 20, "val/loss": 1.5 - score, key: score}
                records.append(val)
        runs[name] = records
    return runs


def sample_inputs(out: Path, methods: int = 8, images: int = 24) -> ReportInputs:
    """Every report input, with map and mask files written under ``out``."""
    out = Path(out)
    train = SampleDataset("train", images, seed=0)
    val = SampleDataset("val", images, seed=1)
    _write_files(out, train, val)
    # the columns wsss.pipeline.report_examples.run_example_sets makes of a full run
    train_columns = []
    for method in ("cam", "pnoc", "lpcam"):
        train_columns.append(ExampleColumn(f"{method} heat map", out / "maps" / method, "heat"))
        train_columns.append(ExampleColumn(f"{method} seed", out / "maps" / method, "seed"))
    train_columns += [
        ExampleColumn("saliency (c2am_h)", out / "saliency", "saliency"),
        ExampleColumn("affinity labels (cam)", out / "affinity" / "cam", "mask"),
        ExampleColumn("pseudo mask (cam)", out / "pseudo" / "rw_cam", "mask"),
        ExampleColumn("prediction", out / "report_files" / "train", "mask", required=False),
    ]
    val_columns = [ExampleColumn("prediction", out / "segmentation", "mask")]
    return ReportInputs(
        results=sample_results(methods),
        title="wsss run: sample with <8> methods",
        command=["wsss", "run", "voc12-pnoc", "--out", "runs/voc & co", "--set", "train.lr=0.1"],
        artefacts={
            "CAM maps": out / "maps" / "cam",
            "pseudo masks": "pseudo/rw_cam",
            "segmentation predictions": out / "segmentation",
            "results": out / "results.json",
        },
        timings={"train_cam": 1200.0, "maps_cam": 300.0, "ccam": 400.0, "rw": 250.0, "seg": 2000.0},
        config={"train": {"epochs": 15, "backbone": "resnet50", "strategy": "pnoc"}},
        info={"seeds": {"seed": 0}, "versions": {"wsss": "0.1", "torch": "2.4"}},
        training=sample_training(),
        examples=[
            ExampleSet(train, train_columns, "train split", 4, 4),
            ExampleSet(val, val_columns, "val split: segmentation", 4, 4),
        ],
    )


def main(out: str) -> Path:
    """Write the sample report to ``out/report.html``; return its path."""
    folder = Path(out)
    (folder).mkdir(parents=True, exist_ok=True)
    inputs = sample_inputs(folder)
    (folder / "results.json").write_text("{}\n")
    return write_report(folder / "report.html", inputs)


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "sample-report"))
