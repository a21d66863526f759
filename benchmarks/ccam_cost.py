"""Cost of one C²AM training step as a ratio to a CAM step, on the same batch.

The comparison's recipe (``synth-compare``: resnet10t at output stride 8, batch 32 of 96-px
crops) on the synthetic benchmark. Each task gets a :class:`~wsss.train.engine.Trainer` and runs
the engine's whole optimiser step on the same pre-loaded images: ``cam`` (vanilla CAM),
``ccam`` (C²AM: the backbone, the one-channel head, the pooled vectors and the rank-weighted
contrastive loss over the batch), ``ccam_h`` (C²AM-H: plus the hint loss on hint maps of the
batch) and ``detector`` (the two-class DeepLabV3+ saliency detector on 0/1 masks). Data
loading is excluded. The tasks take turns, a few steps each, for several rounds, so that a
change of load on the machine hits them alike; the median step time per task is reported.
Also reported: the end-of-epoch direction detection (``detect``) on ``--direction-images``
images, in seconds and in steps.

    .venv/bin/python benchmarks/ccam_cost.py --out benchmarks/results/ccam_cost.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wsss.config import load_config
from wsss.data.datasets import build_dataset
from wsss.data.loader import Batch
from wsss.data.synthetic import SynthConfig, generate_synthetic
from wsss.io.atomic import atomic_write_json
from wsss.io.maps import ClassMaps, MapStore
from wsss.io.masks import MaskStore
from wsss.train.engine import Trainer
from wsss.train.tasks.saliency.data import HintBatch

TASKS = ("cam", "ccam", "ccam_h", "detector")


def _fixtures(dataset, tmp: Path) -> tuple[Path, Path]:
    """A hint folder (the GT foreground as a 0.9 map) and a 0/255 mask folder."""
    hints, masks = MapStore(tmp / "hints"), MaskStore(tmp / "pseudo")
    hints.root.mkdir()
    masks.root.mkdir()
    for sample_id in dataset.ids:
        fg = dataset.load_mask(sample_id)
        fg = ((fg > 0) & (fg < 255)).astype(np.float32)
        hints.save(sample_id, ClassMaps([1], fg[None, ::4, ::4] * 0.9, fg[None] * 0.9))
        masks.save(sample_id, (fg * 255).astype(np.uint8))
    return hints.root, masks.root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="benchmark [a fresh small one]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per turn")
    parser.add_argument("--direction-images", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default]")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            data = tmp / "data"
            generate_synthetic(data, SynthConfig(seed=0, train=64, val=0), progress=False)
        dataset = build_dataset("voc", data, "train")
        hints, masks = _fixtures(dataset, tmp)
        common = [f"data.root={data}", "train.device=cpu", "train.num_workers=0"]
        per_task = {
            "cam": [],
            "ccam": ["train.task=ccam"],
            "ccam_h": ["train.task=ccam", f"train.strategy_args.hints={hints}"],
            "detector": ["train.task=saliency_detector", f"train.strategy_args.masks={masks}"],
        }
        trainers = {}
        for name in TASKS:
            config = load_config("synth-compare", [*common, *per_task[name]])
            torch.manual_seed(0)
            trainers[name] = Trainer(config, tmp / name, dataset, progress=False)
        batch_size = trainers["cam"].config.train.batch_size
        cam_batches = [next(iter(trainers["cam"].loader)) for _ in range(2)]
        hint_batches = [next(iter(trainers["ccam_h"].loader)) for _ in range(2)]
        mask_batches = [next(iter(trainers["detector"].loader)) for _ in range(2)]
        # The same images for every task; each task gets its own targets for them.
        batches = {
            "cam": cam_batches,
            "ccam": [HintBatch(b.images, None, b.ids, b.indices) for b in cam_batches],
            "ccam_h": [
                HintBatch(b.images, h.hints, b.ids, b.indices)
                for b, h in zip(cam_batches, hint_batches, strict=True)
            ],
            "detector": [
                Batch(b.images, b.labels, b.ids, b.indices, m.masks)
                for b, m in zip(cam_batches, mask_batches, strict=True)
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in TASKS}
        for name, trainer in trainers.items():  # warm-up: allocator, oneDNN kernels
            trainer.task.train()
            for batch in batches[name]:
                trainer._train_step([batch], 0)
        for round_index in range(args.rounds):
            order = TASKS[round_index % len(TASKS) :] + TASKS[: round_index % len(TASKS)]
            for name in order:
                trainer = trainers[name]
                for i in range(args.steps):
                    start = time.perf_counter()
                    trainer._train_step([batches[name][i % 2]], 0)
                    times[name].append(time.perf_counter() - start)
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)

        task = trainers["ccam"].task
        task.args.direction_images = args.direction_images
        start = time.perf_counter()
        task.detect(torch.device("cpu"))
        detect_s = time.perf_counter() - start

    base = statistics.median(times["cam"])
    print(f"\n{'task':10} {'s/step':>8} {'× cam':>8}   (batch {batch_size}, 96-px crops)")
    rows = {}
    for name in TASKS:
        median = statistics.median(times[name])
        rows[name] = {"median_s": median, "ratio": median / base, "samples": times[name]}
        print(f"{name:10} {median:8.3f} {median / base:8.2f}")
    ccam_step = rows["ccam"]["median_s"]
    print(
        f"direction detection on {args.direction_images} images: {detect_s:.2f} s "
        f"(= {detect_s / ccam_step:.1f} C²AM steps, once per epoch)"
    )
    load = os.getloadavg()
    print(f"torch threads {torch.get_num_threads()}; load average {load[0]:.2f} {load[1]:.2f}")
    if args.out:
        doc = {
            "batch_size": batch_size,
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg": list(load),
            "tasks": rows,
            "detect": {"images": args.direction_images, "seconds": detect_s},
        }
        atomic_write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
