"""The demo: the whole weakly-supervised pipeline on the synthetic benchmark, on a CPU.

Stages (each skipped when its outputs are complete, so an interrupted demo resumes)::

    data         generate the synthetic benchmark (if absent)
    train_cam    train the ``synth-demo`` classifier (vanilla CAM) from scratch
    maps_cam     CAMs of the train split (``maps.scales``, each with its flip)
    eval_cam     seed masks at the fixed threshold and the oracle sweep → results.json
    train_pnoc   (demo.strategy=pnoc) P-NOC with the vanilla classifier as its OC
    maps_pnoc, eval_pnoc
    lpcam_fit    LPCAM prototypes of the vanilla classifier (demo.lpcam)
    maps_lpcam   LPCAM and LPCAM-F maps (one feature pass for both)
    eval_lpcam, eval_lpcam_f
    train_c2am   (demo.ccam) C²AM (synth-ccam; backbone from the CAM classifier)
    train_c2am_h C²AM-H, hints from the CAMs of the training split
    maps_c2am, maps_c2am_h          one-channel saliency maps (map method ccam)
    eval_saliency_c2am, eval_saliency_c2am_h
    pseudo_saliency_c2am_h          pseudo-saliency masks (threshold + two-label CRF)
    eval_cam_saliency               CAM seeds with the C²AM-H saliency as background
    affinity_<m>        (refine.methods) affinity labels of map ``m`` → results.json
    train_boundary_<m>  IRN's boundary network on them (refine.boundary=shared: one, on
                        the first method's labels)
    rw_<m>              random-walk pseudo masks of ``m`` → results.json
    report       report.html

LPCAM uses the vanilla classifier, so ``cam`` / ``lpcam`` / ``lpcam_f`` compare maps of one
network; a strategy's entry (``pnoc``) is the CAM of its own classifier. The settings are a
:class:`~wsss.pipeline.config.PipelineConfig` loaded from the ``demo`` preset.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss.config import Config, apply_overrides, config_to_dict
from wsss.config.core import Override, override_key
from wsss.errors import ConfigError
from wsss.pipeline.config import PipelineConfig, pipeline_config
from wsss.pipeline.core import Pipeline, Stage, StageReport
from wsss.pipeline.refine_stages import boundary_base_config, refine_stages
from wsss.pipeline.rundir import RunDir
from wsss.pipeline.saliency_stages import (
    PseudoSaliencyStage,
    SaliencyEvalStage,
    SaliencySeedsStage,
    ccam_training_config,
)
from wsss.pipeline.stages import (
    DataSpec,
    EvalStage,
    MapsStage,
    PrototypeStage,
    ReportStage,
    SynthStage,
    TrainStage,
)
from wsss.runtime import distributed

__all__ = [
    "STRATEGIES",
    "DemoResult",
    "config_writer",
    "data_root",
    "demo_config",
    "demo_pipeline",
    "run_demo",
]

STRATEGIES = ("vanilla", "pnoc")


def demo_config(
    overrides: Iterable[Override] = (),
    *,
    preset: str | Path | None = "demo",
    strategy: str | None = None,
    lpcam: bool | None = None,
    ccam: bool | None = None,
    device: str | None = None,
    data: str | os.PathLike | None = None,
) -> PipelineConfig:
    """The demo's settings: the ``demo`` preset, then the shortcuts, then ``key=value`` overrides.

    The shortcuts are the ``wsss demo`` options and set the same fields as overrides would:
    ``strategy`` → ``demo.strategy``, ``lpcam`` → ``demo.lpcam``, ``ccam`` → ``demo.ccam``,
    ``device`` → ``train.device`` and ``maps.device``, ``data`` → ``data.root`` (None leaves a
    field as the preset has it). Overrides use the pipeline's sections: ``synth.train=400``,
    ``lpcam.k=8``, ``maps.scales=[1.0,0.5]``, ``eval.threshold=0.25``, ``train.epochs=2``,
    ``saliency.threshold=0.3``.

    Unless an override sets ``train.val_every``, the classifier is validated once, after its
    last epoch (``train.val_every`` = ``train.epochs``): validation there does not change the
    weights, and per-epoch validation would only cost time.

    Raises:
        ConfigError: Unknown key, bad value, unknown preset.
    """
    overrides = list(overrides)
    shortcuts = {
        "demo.strategy": strategy,
        "demo.lpcam": lpcam,
        "demo.ccam": ccam,
        "train.device": device,
        "maps.device": device,
        "data.root": None if data is None else str(data),
    }
    config = pipeline_config(preset, overrides, shortcuts=shortcuts)
    if "train.val_every" not in {override_key(o) for o in overrides}:
        config = apply_overrides(config, [("train.val_every", config.train.epochs)])
    return config


def data_root(run: RunDir, config: PipelineConfig) -> Path:
    """The benchmark folder: ``data.root``, or ``<run>/data``; resolved."""
    root = Path(config.data.root) if config.data.root else run.path / "data"
    return root.expanduser().resolve()


def _strategy_config(classifier: Config, strategy: str, oc: Path) -> Config:
    train = dataclasses.replace(
        classifier.train,
        strategy=strategy,
        strategy_args={**classifier.train.strategy_args, "oc": str(oc)},
    )
    return dataclasses.replace(classifier, train=train)


def demo_pipeline(
    run: RunDir,
    config: PipelineConfig,
    root: str | os.PathLike | None = None,
    progress: bool = True,
) -> Pipeline:
    """The demo's stages for ``run``, reading (and generating) the benchmark at ``root``.

    ``root`` defaults to :func:`data_root`.
    """
    root = Path(root).resolve() if root is not None else data_root(run, config)
    demo = config.demo
    data = DataSpec(root, demo.split, "voc")
    classifier = config.classifier
    classifier = dataclasses.replace(
        classifier, data=dataclasses.replace(classifier.data, root=str(root), format="voc")
    )
    device = config.maps.device
    maps = {"scales": config.maps.scales, "device": device, "progress": progress}
    evals = {
        "threshold": config.eval.threshold,
        "thresholds": config.eval.thresholds,
        "progress": progress,
    }

    stages: list[Stage] = [
        SynthStage(root, config.synth, workers=min(2, os.cpu_count() or 1), progress=progress),
        TrainStage("cam", classifier, requires=("data",), progress=progress),
        MapsStage("cam", "cam", data, requires=("train_cam",), **maps),
        EvalStage("cam", data, requires=("maps_cam",), **evals),
    ]
    evaluations = ["eval_cam"]
    if demo.strategy != "vanilla":
        name = demo.strategy
        strategy_config = _strategy_config(classifier, name, run.checkpoint("cam"))
        stages += [
            TrainStage(name, strategy_config, requires=("data", "train_cam"), progress=progress),
            MapsStage(name, name, data, map_method="cam", requires=(f"train_{name}",), **maps),
            EvalStage(name, data, requires=(f"maps_{name}",), **evals),
        ]
        evaluations.append(f"eval_{name}")
    if demo.lpcam:
        stages.append(
            PrototypeStage(
                "cam",
                data,
                config.lpcam,
                device=device,
                requires=("train_cam", "maps_cam"),
                progress=progress,
            )
        )
        lpcam = MapsStage(
            "lpcam", "cam", data, "lpcam", prototypes="lpcam", requires=("lpcam_fit",), **maps
        )
        stages.append(lpcam)
        for method in lpcam.map_names.values():
            stages.append(EvalStage(method, data, requires=("maps_lpcam",), **evals))
            evaluations.append(f"eval_{method}")
    # Seeds this demo makes among refine.methods (LPCAM's are skipped with demo.lpcam=false).
    producers = {
        name: stage.name
        for stage in stages
        if isinstance(stage, MapsStage)
        for name in stage.map_names.values()
    }
    lpcam_names = MapsStage("lpcam", "cam", data, "lpcam").map_names.values()
    possible = {"cam", *STRATEGIES, *lpcam_names} - {"vanilla"}
    unknown = [m for m in config.refine.methods if m not in possible]
    if unknown:
        raise ConfigError(
            f"refine.methods: the demo makes no maps {unknown}; choose among "
            f"{', '.join(sorted(possible))}"
        )
    methods = [m for m in config.refine.methods if m in producers]
    if methods:
        base = boundary_base_config(
            config.refine.preset, root, demo.split, "voc", device=config.train.device
        )
        refine = refine_stages(
            config.refine,
            data,
            base,
            classifier="cam",
            methods=methods,
            producers=producers,
            device=device,
            thresholds=config.eval.thresholds,
            progress=progress,
        )
        stages += refine
        evaluations += [s.name for s in refine if not s.name.startswith("train_")]
    if demo.ccam:
        stages += _saliency_stages(run, config, root, data, maps, progress)
        evaluations += ["eval_saliency_c2am", "eval_saliency_c2am_h", "eval_cam_saliency"]
    extras = (" + LPCAM" if demo.lpcam else "") + (" + C²AM" if demo.ccam else "")
    title = f"wsss demo: {demo.strategy}{extras} on the synthetic benchmark"
    threshold = config.eval.threshold
    stages.append(
        ReportStage(data, config.report.examples, threshold, title, requires=tuple(evaluations))
    )
    return Pipeline(stages)


def _saliency_stages(
    run: RunDir,
    config: PipelineConfig,
    root: Path,
    data: DataSpec,
    maps: dict[str, Any],
    progress: bool,
) -> list[Stage]:
    """C²AM and C²AM-H on the classifier's training split, their maps and evaluations."""
    from wsss.errors import ConfigError

    train_split = config.data.split
    if config.demo.split != train_split:
        raise ConfigError(
            f"demo.ccam needs demo.split ({config.demo.split!r}) = data.split ({train_split!r}): "
            "C²AM-H's hints are the CAMs of its training images; set demo.ccam=false otherwise"
        )
    sal = config.saliency
    train_data = DataSpec(root, train_split, "voc")
    backbone = run.checkpoint("cam")
    shared = (
        ("train.device", config.train.device),
        ("train.num_workers", config.train.num_workers),
        *sal.train,
    )
    plain = ccam_training_config(sal.train_preset, train_data, backbone, overrides=shared)
    hinted = ccam_training_config(
        sal.train_preset, train_data, backbone, run.maps_dir("cam"), overrides=shared
    )
    evals = {"threshold": sal.threshold, "progress": progress}
    return [
        TrainStage("c2am", plain, requires=("data", "train_cam"), progress=progress),
        TrainStage("c2am_h", hinted, requires=("data", "train_cam", "maps_cam"), progress=progress),
        MapsStage("c2am", "c2am", data, map_method="ccam", requires=("train_c2am",), **maps),
        MapsStage("c2am_h", "c2am_h", data, map_method="ccam", requires=("train_c2am_h",), **maps),
        SaliencyEvalStage("c2am", data, requires=("maps_c2am",), **evals),
        SaliencyEvalStage("c2am_h", data, requires=("maps_c2am_h",), **evals),
        PseudoSaliencyStage(
            "c2am_h",
            data,
            sal.threshold,
            sal.crf_iterations,
            workers=0,  # small images: spawning workers costs more than the CRF they share
            requires=("maps_c2am_h",),
        ),
        SaliencySeedsStage(
            "cam",
            "c2am_h",
            data,
            seed_threshold=sal.seed_threshold,
            requires=("maps_cam", "maps_c2am_h"),
            progress=progress,
        ),
    ]


@dataclass
class DemoResult:
    """What :func:`run_demo` did.

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


def run_demo(
    out: str | os.PathLike = "runs/demo",
    config: PipelineConfig | None = None,
    on_stage: Callable[[StageReport], None] | None = None,
    on_start: Callable[[Stage, str], None] | None = None,
    progress: bool = True,
) -> DemoResult:
    """Run (or resume) the demo into ``out``; under ``torchrun``, on every process.

    Args:
        out: Run directory.
        config: Settings (default :func:`demo_config` with no overrides); ``data.root`` is the
            synthetic benchmark folder (default ``<out>/data``), generated if absent.
        on_stage: Called with each stage's report as it finishes or is skipped.
        on_start: Called with each stage about to run and the reason it runs.
        progress: Show progress bars.
    """
    start = time.perf_counter()
    config = config or demo_config()
    distributed.init_distributed()
    run = RunDir(out)
    root = data_root(run, config)
    pipeline = demo_pipeline(run, config, root, progress=progress)
    prepare = config_writer(config, root, pipeline.names)
    reports = pipeline.run(run, on_stage=on_stage, on_start=on_start, prepare=prepare)
    return DemoResult(run, reports, run.results(), time.perf_counter() - start)
