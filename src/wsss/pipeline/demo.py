"""The demo: the whole weakly-supervised pipeline on the synthetic benchmark, on a CPU.

``wsss demo`` is ``wsss run synth-full`` with the demo's shortcuts (``--strategy``,
``--lpcam``, ``--ccam``, ``--data``); the stages are :func:`wsss.pipeline.graph.build_pipeline`'s:
data, the vanilla classifier, CAM and LPCAM maps and their seed evaluation, C²AM and C²AM-H
saliency, affinity labels, boundary networks and random-walk pseudo masks of the CAM and LPCAM
seeds, the segmentation network trained on the CAM pseudo masks and scored on the val split,
and the report. Each stage is skipped when its outputs are complete, so an interrupted demo
resumes. LPCAM uses the vanilla classifier, so ``cam`` / ``lpcam`` / ``lpcam_f`` compare maps
of one network; a strategy's entry (``pnoc``) is the CAM of its own classifier.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from wsss.config.core import Override
from wsss.pipeline.config import PipelineConfig
from wsss.pipeline.core import Pipeline, Stage, StageReport
from wsss.pipeline.graph import build_pipeline, data_root
from wsss.pipeline.rundir import RunDir
from wsss.pipeline.runner import RunResult, config_writer, run_config, run_pipeline

__all__ = [
    "DemoResult",
    "config_writer",
    "data_root",
    "demo_config",
    "demo_pipeline",
    "run_demo",
]


def demo_config(
    overrides: Iterable[Override] = (),
    *,
    preset: str | Path | None = "synth-full",
    strategy: str | None = None,
    lpcam: bool | None = None,
    ccam: bool | None = None,
    device: str | None = None,
    data: str | os.PathLike | None = None,
) -> PipelineConfig:
    """The demo's settings: the ``synth-full`` preset, then the shortcuts, then ``key=value``
    overrides.

    The shortcuts are the ``wsss demo`` options and set the same fields as overrides would:
    ``strategy`` → ``run.strategy``, ``lpcam`` → ``run.lpcam``, ``ccam`` → ``run.ccam``,
    ``device`` → ``train.device`` and ``maps.device``, ``data`` → ``data.root`` (None leaves a
    field as the preset has it). Overrides use the pipeline's sections: ``synth.train=400``,
    ``lpcam.k=8``, ``maps.scales=[1.0,0.5]``, ``eval.threshold=0.25``, ``train.epochs=2``,
    ``saliency.threshold=0.3``.

    Unless an override sets ``train.val_every``, the classifier is validated once, after its
    last epoch (:func:`~wsss.pipeline.runner.run_config`).

    Raises:
        ConfigError: Unknown key, bad value, unknown preset.
    """
    overrides = list(overrides)
    shortcuts = {
        "run.strategy": strategy,
        "run.lpcam": lpcam,
        "run.ccam": ccam,
        "train.device": device,
        "maps.device": device,
        "data.root": None if data is None else str(data),
    }
    return run_config(preset, overrides, shortcuts)


DemoResult = RunResult  # what run_demo returns


def demo_pipeline(
    run: RunDir,
    config: PipelineConfig,
    root: str | os.PathLike | None = None,
    progress: bool = True,
) -> Pipeline:
    """The demo's stages for ``run`` (:func:`wsss.pipeline.graph.build_pipeline`)."""
    return build_pipeline(run, config, root, progress=progress)


def run_demo(
    out: str | os.PathLike = "runs/demo",
    config: PipelineConfig | None = None,
    on_stage: Callable[[StageReport], None] | None = None,
    on_start: Callable[[Stage, str], None] | None = None,
    progress: bool = True,
) -> RunResult:
    """Run (or resume) the demo into ``out``; under ``torchrun``, on every process.

    Args:
        out: Run directory.
        config: Settings (default :func:`demo_config` with no overrides); ``data.root`` is the
            synthetic benchmark folder (default ``<out>/data``), generated if absent.
        on_stage: Called with each stage's report as it finishes or is skipped.
        on_start: Called with each stage about to run and the reason it runs.
        progress: Show progress bars.
    """
    config = config or demo_config()
    return run_pipeline(out, config, on_stage, on_start, progress)
