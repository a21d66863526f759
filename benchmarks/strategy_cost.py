"""Cost of one training step of every strategy, as a ratio to a vanilla CAM step.

The comparison's recipe (``synth-compare``: resnet10t at output stride 8, batch 32 of 96-px
crops) on the synthetic benchmark. Every strategy gets a :class:`~wsss.train.engine.Trainer` on
the same pre-loaded batches; one step is the engine's whole optimiser step (forward passes,
backward passes, every phase's update), data loading excluded since it is the same for all.
The strategies take turns, a few steps each, for several rounds, so that a change of load on
the machine hits them alike; the median step time per strategy is reported. Label smoothing
changes no cost, so the ``_ls`` runs of the comparison cost what their base strategy costs.

    .venv/bin/python benchmarks/strategy_cost.py --out benchmarks/results/strategy_cost.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from wsss.config import load_config
from wsss.data.datasets import build_dataset
from wsss.data.synthetic import SynthConfig, generate_synthetic
from wsss.io.atomic import atomic_write_json
from wsss.models import save_model
from wsss.models.classifier import CAMClassifier
from wsss.train.engine import Trainer

STRATEGIES = ("vanilla", "puzzle", "occse", "poc", "pnoc")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="benchmark [a fresh small one]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per turn")
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
        oc = CAMClassifier("resnet10t", len(dataset.classes), output_stride=8)
        oc_path = save_model(tmp / "oc", oc, {"classes": list(dataset.classes)})
        trainers = {}
        for name in STRATEGIES:
            overrides = [
                f"data.root={data}",
                f"train.strategy={name}",
                "train.device=cpu",
                "train.num_workers=0",
            ]
            if name in ("occse", "poc", "pnoc"):
                overrides.append(f"train.strategy_args.oc={oc_path}")
            config = load_config("synth-compare", overrides)
            torch.manual_seed(0)
            trainers[name] = Trainer(config, tmp / name, dataset, progress=False)
        batch_size = next(iter(trainers.values())).config.train.batch_size
        batches = [next(iter(trainers["vanilla"].loader)) for _ in range(2)]
        times: dict[str, list[float]] = {name: [] for name in STRATEGIES}
        for trainer in trainers.values():  # warm-up: allocator, oneDNN kernels
            trainer.strategy.train()
            for batch in batches:
                trainer._train_step([batch], 0)
        for round_index in range(args.rounds):
            order = STRATEGIES[round_index % len(STRATEGIES) :] + STRATEGIES[: round_index % 5]
            for name in order:
                trainer = trainers[name]
                for i in range(args.steps):
                    start = time.perf_counter()
                    trainer._train_step([batches[i % len(batches)]], 0)
                    times[name].append(time.perf_counter() - start)
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)

    base = statistics.median(times["vanilla"])
    print(f"\n{'strategy':10} {'s/step':>8} {'× vanilla':>10}   (batch {batch_size}, 96-px crops)")
    rows = {}
    for name in STRATEGIES:
        median = statistics.median(times[name])
        rows[name] = {"median_s": median, "ratio": median / base, "samples": times[name]}
        print(f"{name:10} {median:8.3f} {median / base:10.2f}")
    load = os.getloadavg()
    print(f"torch threads {torch.get_num_threads()}; load average {load[0]:.2f} {load[1]:.2f}")
    if args.out:
        doc = {
            "batch_size": batch_size,
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg": list(load),
            "strategies": rows,
        }
        atomic_write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
