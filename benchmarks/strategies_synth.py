"""CAM, Puzzle-CAM, OC-CSE, P-OC and P-NOC (± label smoothing) on the synthetic benchmark.

The comparison of :mod:`wsss.pipeline.compare` (also ``wsss demo --compare``): every classifier
gets the same budget and backbone, the ``synth-compare`` preset (resnet10t from scratch at output
stride 8, 96-px crops, AdamW + one-cycle, 8 epochs of the 800 training images); the ordinary
classifier of OC-CSE, P-OC and P-NOC is the vanilla ``cam`` run of that same recipe. Each
classifier's CAMs of the train split (scales 1 and 0.5, each with its flip) are turned into seed
masks and evaluated at the fixed threshold 0.3 and with the oracle sweep (threshold chosen on the
ground truth, an upper bound).

Runs and label smoothing ε: ``cam puzzle occse poc pnoc`` (ε = 0), ``poc_ls pnoc_ls cam_ls``
(ε = 0.1; the P-NOC paper smooths P-OC and P-NOC, ``cam_ls`` separates smoothing alone).

All artefacts go to one run directory: a finished stage is skipped and an interrupted training
resumes, so the script can be stopped and restarted at will. The table is written to
``<out>/table.md`` and printed, the HTML report to ``<out>/report.html``.

Usage::

    python benchmarks/strategies_synth.py --out runs/strategies-synth   # all (~1 h on 2 cores)
    python benchmarks/strategies_synth.py --runs cam puzzle               # a subset
    python benchmarks/strategies_synth.py --preset hard-bodies-compare    # the old benchmark
    python benchmarks/strategies_synth.py --out /tmp/quick train.epochs=1 synth.train=64 \\
        synth.val=8                                                       # a smoke test
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wsss.pipeline.compare import COMPARISON_RUNS, comparison_config, run_comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="key=value: synth.*, demo.*, or classifier")
    parser.add_argument("--out", type=Path, default=Path("runs/strategies-synth"))
    parser.add_argument("--data", type=Path, default=None, help="benchmark folder [<out>/data]")
    parser.add_argument("--runs", nargs="+", choices=list(COMPARISON_RUNS), default=None)
    parser.add_argument(
        "--preset",
        default="demo-compare",
        help="pipeline preset [demo-compare; hard-bodies-compare]",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)

    def report(stage_report) -> None:
        if stage_report.status == "ran":
            print(f"{stage_report.name}: {stage_report.seconds:.0f} s", flush=True)

    result = run_comparison(
        args.out,
        args.data,
        args.runs,
        comparison_config(args.overrides, preset=args.preset),
        on_stage=report,
        progress=args.progress,
    )
    print(result.table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
