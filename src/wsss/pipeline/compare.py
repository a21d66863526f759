"""The training-strategy comparison on the synthetic benchmark (``wsss demo --compare``).

CAM, Puzzle-CAM, OC-CSE, P-OC and P-NOC, with and without label smoothing where the P-NOC paper
uses it, each trained with one budget and backbone: the ``demo-compare`` pipeline preset (on the
``synth-compare`` recipe, synth-demo's restated, so that retuning the demo does not invalidate
finished runs; TTA scales 1 and 0.5). The ordinary
classifier of OC-CSE, P-OC and P-NOC is the comparison's own vanilla ``cam`` run. Each
classifier's CAMs of the train split are turned into seed masks and evaluated at the fixed
threshold and with the oracle sweep.

Stages, in one run directory (each skipped when complete, an interrupted training resumes)::

    data
    train_<run>, maps_<run>, eval_<run>     for every run, ``cam`` first
    report                                  report.html

``table.md`` (Markdown) is rewritten after every evaluation.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss.config import Config, config_to_dict
from wsss.config.core import Override
from wsss.errors import ConfigError
from wsss.io.atomic import atomic_write_text
from wsss.pipeline.config import PipelineConfig
from wsss.pipeline.core import Pipeline, Stage, StageReport
from wsss.pipeline.demo import config_writer, data_root, demo_config
from wsss.pipeline.rundir import RunDir
from wsss.pipeline.stages import (
    DataSpec,
    EvalStage,
    MapsStage,
    ReportStage,
    SynthStage,
    TrainStage,
)
from wsss.runtime import distributed
from wsss.train.strategies import STRATEGIES

__all__ = [
    "COMPARISON_RUNS",
    "ComparisonResult",
    "comparison_config",
    "comparison_pipeline",
    "comparison_table",
    "run_comparison",
]

# run name → (strategy, label smoothing ε). The P-NOC paper smooths P-OC and P-NOC; ``cam_ls``
# separates the effect of smoothing alone.
COMPARISON_RUNS: dict[str, tuple[str, float]] = {
    "cam": ("vanilla", 0.0),
    "puzzle": ("puzzle", 0.0),
    "occse": ("occse", 0.0),
    "poc": ("poc", 0.0),
    "pnoc": ("pnoc", 0.0),
    "poc_ls": ("poc", 0.1),
    "pnoc_ls": ("pnoc", 0.1),
    "cam_ls": ("vanilla", 0.1),
}
NEEDS_OC = frozenset({"occse", "poc", "pnoc"})
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


def comparison_config(
    overrides: Iterable[Override] = (),
    preset: str | Path | None = "demo-compare",
    device: str | None = None,
) -> PipelineConfig:
    """The comparison's settings: the ``demo-compare`` preset, then ``overrides``.

    ``device`` sets ``train.device`` and ``maps.device`` (see
    :func:`~wsss.pipeline.demo.demo_config`). The ``demo.*`` run choices do not apply.
    """
    return demo_config(overrides, preset=preset, device=device)


def select_runs(names: Sequence[str] | None) -> list[str]:
    """Validated run names in order, with the ordinary classifier's run first when needed."""
    names = list(dict.fromkeys(names or COMPARISON_RUNS))
    unknown = [n for n in names if n not in COMPARISON_RUNS]
    if unknown:
        raise ConfigError(f"unknown comparison run(s) {unknown}; known: {list(COMPARISON_RUNS)}")
    if any(COMPARISON_RUNS[n][0] in NEEDS_OC for n in names) and OC_RUN not in names:
        names.insert(0, OC_RUN)
    return names


def _strategy_fields(strategy: str) -> set[str]:
    return {f.name for f in dataclasses.fields(STRATEGIES.get(strategy).Args)}


def check_strategy_args(base: Config, names: Sequence[str]) -> None:
    """Raise a :class:`ConfigError` for a ``train.strategy_args`` key no selected run uses."""
    known = set().union(*(_strategy_fields(COMPARISON_RUNS[n][0]) for n in names))
    unknown = sorted(set(base.train.strategy_args) - known)
    if unknown:
        raise ConfigError(
            f"train.strategy_args {unknown} are not settings of any strategy in runs {list(names)}"
            f" (their settings: {sorted(known)})"
        )


def run_config(base: Config, name: str, oc: Path) -> Config:
    """``base`` with the strategy, ε and (where needed) the ordinary classifier of run ``name``.

    Of ``base``'s ``train.strategy_args``, the run keeps those its strategy has, so that e.g.
    ``lambda_re`` reaches Puzzle-CAM, P-OC and P-NOC but not the vanilla OC run.
    """
    strategy, epsilon = COMPARISON_RUNS[name]
    fields = _strategy_fields(strategy)
    args = {k: v for k, v in base.train.strategy_args.items() if k in fields}
    if strategy in NEEDS_OC:
        args["oc"] = str(oc)
    train = dataclasses.replace(
        base.train, strategy=strategy, label_smoothing=epsilon, strategy_args=args
    )
    return dataclasses.replace(base, train=train)


def comparison_pipeline(
    run: RunDir,
    settings: PipelineConfig,
    root: str | os.PathLike | None,
    names: Sequence[str],
    progress: bool = True,
) -> tuple[Pipeline, dict[str, Any]]:
    """The comparison's stages for ``run`` and each run's resolved training configuration.

    ``root`` is the benchmark folder (None: :func:`~wsss.pipeline.demo.data_root`).
    """
    root = Path(root).resolve() if root is not None else data_root(run, settings)
    base = settings.classifier
    base = dataclasses.replace(base, data=dataclasses.replace(base.data, root=str(root)))
    data = DataSpec(root, settings.run.split, "voc")
    check_strategy_args(base, names)
    oc = run.checkpoint(OC_RUN)
    stages: list[Stage] = [
        SynthStage(root, settings.synth, workers=min(2, os.cpu_count() or 1), progress=progress)
    ]
    resolved = {}
    for name in names:
        config = run_config(base, name, oc)
        resolved[name] = config_to_dict(config)
        needs_oc = COMPARISON_RUNS[name][0] in NEEDS_OC
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
                scales=settings.maps.scales,
                device=settings.maps.device,
                requires=(f"train_{name}",),
                progress=progress,
            ),
            EvalStage(
                name,
                data,
                threshold=settings.eval.threshold,
                thresholds=settings.eval.thresholds,
                requires=(f"maps_{name}",),
                progress=progress,
            ),
        ]
    stages.append(
        ReportStage(
            data,
            settings.report.examples,
            settings.eval.threshold,
            "wsss: training strategies on the synthetic benchmark",
            requires=tuple(f"eval_{n}" for n in names),
        )
    )
    return Pipeline(stages), resolved


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def comparison_table(run: RunDir, names: Sequence[str]) -> str:
    """Markdown table of the evaluated runs (percentages).

    Training cost is left out: a stage's recorded wall time covers only its last attempt, so
    it is wrong for resumed trainings (``benchmarks/strategy_cost.py`` measures step costs).
    """
    results = run.results()
    header = ["run", "strategy", "ε", *(h for _, h in COLUMNS), "oracle mIoU (t)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        if name not in results:
            continue
        r = results[name]
        best = r.get("best") or {}
        oracle = f"{_fmt(best.get('miou'))} ({best.get('threshold', float('nan')):g})"
        cells = [
            name,
            COMPARISON_RUNS[name][0],
            f"{COMPARISON_RUNS[name][1]:g}",
            *(_fmt(r.get(key)) for key, _ in COLUMNS),
            oracle,
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


@dataclass
class ComparisonResult:
    """What :func:`run_comparison` did.

    Attributes:
        run: The run directory.
        names: The runs compared, in order.
        stages: One report per stage, in order.
        table: The Markdown table (also in ``<run>/table.md``).
        seconds: Wall time of this invocation.
    """

    run: RunDir
    names: list[str]
    stages: list[StageReport]
    table: str
    seconds: float


def run_comparison(
    out: str | os.PathLike = "runs/strategies-synth",
    data: str | os.PathLike | None = None,
    names: Sequence[str] | None = None,
    settings: PipelineConfig | None = None,
    on_stage: Callable[[StageReport], None] | None = None,
    on_start: Callable[[Stage, str], None] | None = None,
    progress: bool = True,
) -> ComparisonResult:
    """Run (or resume) the comparison into ``out``; under ``torchrun``, on every process.

    Args:
        out: Run directory.
        data: Synthetic benchmark folder (sets ``data.root``; default ``<out>/data``);
            generated if absent.
        names: Runs of :data:`COMPARISON_RUNS` (default all; ``cam`` is added when needed).
        settings: From :func:`comparison_config` (default: no overrides).
        on_stage: Called with each stage's report as it finishes or is skipped.
        on_start: Called with each stage about to run and the reason it runs.
        progress: Show progress bars.
    """
    start = time.perf_counter()
    names = select_runs(names)
    settings = settings or comparison_config()
    if data is not None:
        settings = dataclasses.replace(
            settings, data=dataclasses.replace(settings.data, root=str(data))
        )
    distributed.init_distributed()
    main = distributed.dist_info().is_main
    run = RunDir(out)
    root = data_root(run, settings)
    pipeline, resolved = comparison_pipeline(run, settings, root, names, progress)
    prepare = config_writer(settings, root, pipeline.names, runs=resolved)

    def finished(report: StageReport) -> None:
        if report.name.startswith("eval_"):
            atomic_write_text(run.path / "table.md", comparison_table(run, names))
        if on_stage is not None:
            on_stage(report)

    reports = pipeline.run(run, on_stage=finished, on_start=on_start, prepare=prepare)
    table = comparison_table(run, names)
    if main:
        atomic_write_text(run.path / "table.md", table)
    return ComparisonResult(run, names, reports, table, time.perf_counter() - start)
