"""CAM, Puzzle-CAM, OC-CSE, P-OC and P-NOC (± label smoothing) on the synthetic benchmark.

Every classifier gets the same budget and backbone, the ``synth-compare`` preset (synth-demo's
recipe: resnet10t from scratch at output stride 8, 96-px crops, AdamW + one-cycle, 8 epochs of
the 800 training images); the ordinary classifier of OC-CSE, P-OC and P-NOC is the vanilla
``cam`` run of that same recipe. Each classifier's CAMs of the train split (4 scales × flip) are
turned into seed masks and evaluated at the fixed threshold 0.3 and with the oracle sweep
(threshold chosen on the ground truth, an upper bound).

Runs and label smoothing ε (the P-NOC paper smooths P-OC and P-NOC; ``cam_ls`` separates the
effect of smoothing alone)::

    cam (the OC)  puzzle  occse  poc  pnoc  poc_ls  pnoc_ls  cam_ls

All artefacts go to one run directory (``wsss.pipeline``): a finished stage is skipped, an
interrupted training resumes, so the script can be stopped and restarted at will. The table is
written to ``<out>/table.md`` and printed.

Usage::

    python benchmarks/strategies_synth.py --out runs/strategies-synth   # all (hours on 2 cores)
    python benchmarks/strategies_synth.py --runs cam puzzle               # a subset
    python benchmarks/strategies_synth.py --out /tmp/quick train.epochs=1 synth.train=64 \\
        synth.val=8 demo.scales=[1.0]                                     # a smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from wsss.config import Config
from wsss.pipeline import Pipeline, RunDir
from wsss.pipeline.demo import demo_config
from wsss.pipeline.stages import DataSpec, EvalStage, MapsStage, SynthStage, TrainStage
from wsss.utils.io import atomic_write_text

# run name → (strategy, label smoothing ε)
RUNS: dict[str, tuple[str, float]] = {
    "cam": ("vanilla", 0.0),
    "puzzle": ("puzzle", 0.0),
    "occse": ("occse", 0.0),
    "poc": ("poc", 0.0),
    "pnoc": ("pnoc", 0.0),
    "poc_ls": ("poc", 0.1),
    "pnoc_ls": ("pnoc", 0.1),
    "cam_ls": ("vanilla", 0.1),
}
NEEDS_OC = {"occse", "poc", "pnoc"}
OC_RUN = "cam"

# (results key, heading) at the fixed threshold
COLUMNS = (
    ("miou", "mIoU"),
    ("fp", "FP"),
    ("fn", "FN"),
    ("precision", "Prec."),
    ("recall", "Rec."),
    ("head_recall", "head R"),
    ("body_recall", "body R"),
    ("body_far_recall", "far-body R"),
)


def run_config(base: Config, name: str, oc: Path) -> Config:
    """``base`` with the strategy, ε and (where needed) the ordinary classifier of run ``name``."""
    strategy, epsilon = RUNS[name]
    args = dict(base.train.strategy_args)
    if strategy in NEEDS_OC:
        args["oc"] = str(oc)
    train = dataclasses.replace(
        base.train, strategy=strategy, label_smoothing=epsilon, strategy_args=args
    )
    return dataclasses.replace(base, train=train)


def comparison_pipeline(
    run: RunDir,
    names: list[str],
    overrides: list[str],
    data_root: Path,
    progress: bool = True,
) -> tuple[Pipeline, dict[str, Any]]:
    """The stages (data, then train / maps / eval per run) and the resolved settings."""
    settings = demo_config(overrides, preset="synth-compare", lpcam=False)
    base = settings.classifier
    base = dataclasses.replace(base, data=dataclasses.replace(base.data, root=str(data_root)))
    data = DataSpec(data_root, settings.split, "voc")
    oc = run.checkpoint(OC_RUN)
    workers = min(2, os.cpu_count() or 1)
    stages = [SynthStage(data_root, settings.synth, workers=workers, progress=progress)]
    resolved = {}
    for name in names:
        config = run_config(base, name, oc)
        resolved[name] = dataclasses.asdict(config)
        needs_oc = RUNS[name][0] in NEEDS_OC
        stages += [
            TrainStage(
                name,
                config,
                requires=("data", f"train_{OC_RUN}") if needs_oc else ("data",),
                progress=progress,
            ),
            MapsStage(
                name,
                name,
                data,
                map_method="cam",
                scales=settings.scales,
                device=settings.device,
                requires=(f"train_{name}",),
                progress=progress,
            ),
            EvalStage(
                name,
                data,
                threshold=settings.threshold,
                requires=(f"maps_{name}",),
                progress=progress,
            ),
        ]
    doc = {
        "data_root": str(data_root),
        "synth": settings.synth.to_dict(),
        "scales": list(settings.scales),
        "threshold": settings.threshold,
        "split": settings.split,
        "runs": resolved,
    }
    return Pipeline(stages), doc


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def results_table(run: RunDir, names: list[str]) -> str:
    """Markdown table of the evaluated runs (percentages), with training wall time."""
    results, timings = run.results(), run.timings()
    header = ["run", "strategy", "ε", *(h for _, h in COLUMNS), "oracle mIoU (t)", "train min"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        if name not in results:
            continue
        r = results[name]
        best = r.get("best") or {}
        oracle = f"{_fmt(best.get('miou'))} ({best.get('threshold', float('nan')):g})"
        seconds = timings.get(f"train_{name}")
        cells = [
            name,
            RUNS[name][0],
            f"{RUNS[name][1]:g}",
            *(_fmt(r.get(key)) for key, _ in COLUMNS),
            oracle,
            "–" if seconds is None else f"{seconds / 60:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    threshold = next((results[n]["threshold"] for n in names if n in results), None)
    lines.append("")
    lines.append(
        f"Seeds on the train split at the fixed threshold {threshold:g} unless marked oracle; "
        "mIoU over all classes incl. background; FP, FN, precision and recall are means over "
        "the foreground classes; head / body / far-body R: recall on those parts; oracle: "
        "best threshold of the sweep, chosen on the ground truth (an upper bound)."
        if threshold is not None
        else "No run evaluated yet."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="key=value: synth.*, demo.*, or classifier")
    parser.add_argument("--out", type=Path, default=Path("runs/strategies-synth"))
    parser.add_argument("--data", type=Path, default=None, help="benchmark folder [<out>/data]")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)

    names = list(dict.fromkeys(args.runs))
    if any(RUNS[n][0] in NEEDS_OC for n in names) and OC_RUN not in names:
        names.insert(0, OC_RUN)
    run = RunDir(args.out)
    data_root = args.data if args.data is not None else run.path / "data"
    pipeline, doc = comparison_pipeline(run, names, args.overrides, data_root, args.progress)
    run.write_config(doc, extra={"command": [sys.executable, *sys.argv], "stages": pipeline.names})

    def report(stage_report) -> None:
        if stage_report.status == "ran":
            print(f"{stage_report.name}: {stage_report.seconds:.0f} s", flush=True)
        if stage_report.name.startswith("eval_"):
            atomic_write_text(run.path / "table.md", results_table(run, names))

    pipeline.run(run, on_stage=report)
    table = results_table(run, names)
    atomic_write_text(run.path / "table.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
