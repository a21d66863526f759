"""Running a whole pipeline: its settings, its run directory, its status and its report.

:func:`run_config` loads a preset, :func:`run_pipeline` runs (or resumes) its graph
(:func:`wsss.pipeline.graph.build_pipeline`) into a run directory; :func:`stored_pipeline`
rebuilds the graph of an existing run from its ``config.yaml`` (``wsss status``) and
:func:`rebuild_report` renders its report again (``wsss report``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss.config import apply_overrides, config_to_dict
from wsss.config.core import Override, override_key
from wsss.errors import ConfigError
from wsss.pipeline.config import PipelineConfig, pipeline_config, pipeline_config_from_dict
from wsss.pipeline.core import Pipeline, Stage, StageReport
from wsss.pipeline.graph import build_pipeline, data_root
from wsss.pipeline.rundir import RunDir
from wsss.pipeline.stages import ReportStage
from wsss.runtime import distributed

__all__ = [
    "RunResult",
    "config_writer",
    "load_run_config",
    "rebuild_report",
    "run_config",
    "run_pipeline",
    "stored_pipeline",
]


def run_config(
    preset: str | os.PathLike | None,
    overrides: Sequence[Override] = (),
    shortcuts: dict[str, Any] | None = None,
) -> PipelineConfig:
    """A run's settings: ``preset`` (:func:`~wsss.pipeline.config.pipeline_config`), then
    ``shortcuts`` (dedicated command-line options; None values skipped), then overrides.

    On the synthetic benchmark, unless an override sets ``train.val_every``, the classifier
    is validated once, after its last epoch: validation does not change the weights, and
    per-epoch validation would only cost time.

    Raises:
        ConfigError: Unknown preset, key or value.
    """
    config = pipeline_config(preset, overrides, shortcuts=shortcuts)
    keys = {override_key(o) for o in overrides}
    if config.run.synthetic and "train.val_every" not in keys:
        config = apply_overrides(config, [("train.val_every", config.train.epochs)])
    return config


def config_writer(
    config: PipelineConfig, root: Path, stages: Sequence[str], **extra: Any
) -> Callable[[RunDir], None]:
    """A :meth:`Pipeline.run` ``prepare`` hook saving the resolved configuration (``data.root``
    filled in) and the provenance, with ``extra`` keys added to ``config.yaml``."""

    def write(run: RunDir) -> None:
        data = dataclasses.replace(config.data, root=str(root))
        doc = {**config_to_dict(dataclasses.replace(config, data=data)), **extra}
        info = {"command": list(sys.argv), "stages": list(stages)}
        info["world_size"] = distributed.dist_info().world_size
        run.write_config(doc, config.seeds(), extra=info)

    return write


def load_run_config(run: RunDir) -> PipelineConfig:
    """The settings a run was made with (its ``config.yaml``).

    Raises:
        ConfigError: The folder has no ``config.yaml`` (not the ``--out`` folder of
            ``wsss run``, ``wsss demo``), or its settings are not a pipeline's.
    """
    if not run.config_path.is_file():
        raise ConfigError(
            f"{run.path}: no config.yaml; is this the --out folder of `wsss run` or `wsss demo`?"
        )
    try:
        return pipeline_config_from_dict(run.read_config())
    except ConfigError as e:
        raise ConfigError(f"{run.config_path}: {e}") from None


def stored_pipeline(run: RunDir, progress: bool = False) -> tuple[Pipeline, PipelineConfig]:
    """The stage graph a run was made with, rebuilt from its ``config.yaml`` (a run of
    ``wsss run``/``wsss demo``, or a strategy comparison), and its settings.

    Raises:
        ConfigError: Not a run folder (see :func:`load_run_config`).
    """
    config = load_run_config(run)
    doc = run.read_config()
    root = Path(config.data.root) if config.data.root else None
    if isinstance(doc.get("runs"), dict):  # a strategy comparison
        from wsss.pipeline.compare import comparison_pipeline

        pipeline, _ = comparison_pipeline(run, config, root, list(doc["runs"]), progress)
        return pipeline, config
    return build_pipeline(run, config, root, progress=progress), config


def rebuild_report(run: RunDir, examples: int | None = None) -> Path:
    """Render ``run``'s report again from its files (any run of :func:`stored_pipeline`).

    Args:
        run: The run directory.
        examples: Images in the example grid (default: the run's ``report.examples``).

    Returns:
        The report's path.
    """
    from wsss.pipeline.stages import write_run_report

    pipeline, config = stored_pipeline(run)
    report = next(s for s in pipeline.stages if isinstance(s, ReportStage))
    dataset = None if report.data is None else report.data.build()
    count = config.report.examples if examples is None else examples
    return write_run_report(run, dataset, count, report.threshold, report.title)


@dataclass
class RunResult:
    """What :func:`run_pipeline` did.

    Attributes:
        run: The run directory.
        stages: One report per stage, in order.
        results: ``results.json`` content.
        seconds: Wall time of this invocation.
    """

    run: RunDir
    stages: list[StageReport]
    results: dict[str, Any]
    seconds: float


def run_pipeline(
    out: str | os.PathLike,
    config: PipelineConfig,
    on_stage: Callable[[StageReport], None] | None = None,
    on_start: Callable[[Stage, str], None] | None = None,
    progress: bool = True,
    force: Sequence[str] = (),
    **extra: Any,
) -> RunResult:
    """Run (or resume) the stages of ``config`` into ``out``; under ``torchrun``, on every
    process (rank 0 decides, records and writes the results).

    Args:
        out: Run directory.
        config: Settings.
        on_stage: Called with each stage's report as it finishes or is skipped.
        on_start: Called with each stage about to run and the reason it runs.
        progress: Show progress bars.
        force: Stages to rerun even if complete.
        **extra: Keys added to ``config.yaml`` (e.g. ``preset``).
    """
    start = time.perf_counter()
    distributed.init_distributed()
    run = RunDir(out)
    root = data_root(run, config)
    pipeline = build_pipeline(run, config, root, progress=progress)
    prepare = config_writer(config, root, pipeline.names, **extra)
    reports = pipeline.run(run, force, on_stage=on_stage, on_start=on_start, prepare=prepare)
    return RunResult(run, reports, run.results(), time.perf_counter() - start)
