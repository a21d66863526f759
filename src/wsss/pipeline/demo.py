"""The demo: the whole weakly-supervised pipeline on the synthetic benchmark, on a CPU.

Stages (each skipped when its outputs are complete, so an interrupted demo resumes)::

    data         generate the synthetic benchmark (if absent)
    train_cam    train the ``synth-demo`` classifier (vanilla CAM) from scratch
    maps_cam     CAMs of the train split (multi-scale + flip)
    eval_cam     seed masks at the fixed threshold 0.3 and the oracle sweep → results.json
    train_pnoc   (--strategy pnoc) P-NOC with the vanilla classifier as its OC
    maps_pnoc, eval_pnoc
    lpcam_fit    LPCAM prototypes of the vanilla classifier (if --lpcam)
    maps_lpcam   LPCAM and LPCAM-F maps (one feature pass for both)
    eval_lpcam, eval_lpcam_f
    report       report.html

LPCAM uses the vanilla classifier, so ``cam`` / ``lpcam`` / ``lpcam_f`` compare maps of one
network; a strategy's entry (``pnoc``) is the CAM of its own classifier.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsss.config import Config, apply_overrides, dataclass_from_dict, load_config
from wsss.data.synthetic import SynthConfig
from wsss.errors import ConfigError
from wsss.maps.lpcam import PrototypeConfig
from wsss.pipeline.core import Pipeline, RunDir, Stage, StageReport
from wsss.pipeline.stages import (
    DataSpec,
    EvalStage,
    MapsStage,
    PrototypeStage,
    ReportStage,
    SynthStage,
    TrainStage,
)

__all__ = ["STRATEGIES", "DemoConfig", "DemoResult", "demo_config", "demo_pipeline", "run_demo"]

STRATEGIES = ("vanilla", "pnoc")
_SECTIONS = ("demo", "synth", "lpcam")


@dataclass
class DemoConfig:
    """Everything the demo does.

    Attributes:
        classifier: Configuration of the classifier (the ``synth-demo`` preset).
        synth: Synthetic benchmark settings.
        prototypes: LPCAM prototype settings.
        strategy: ``vanilla``, or ``pnoc`` (a vanilla classifier first, then P-NOC with it
            as the ordinary classifier).
        lpcam: Also compute LPCAM and LPCAM-F maps.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        threshold: Fixed background threshold of the seed masks (the papers' 0.3).
        scales: Test-time augmentation scales of every map method (each with its flip).
            The demo uses scale 1 only, not the papers' (1.0, 0.5, 1.5, 2.0): the larger
            scales cost 7× more compute, and on the benchmark they do not change the CAM seed
            mIoU at the fixed threshold (measured on 200 train images: 33.8 with scale 1,
            33.7 with all four).
        examples: Images in the report's example grid.
        split: Split on which maps are computed and evaluated.
    """

    classifier: Config = field(default_factory=Config)
    synth: SynthConfig = field(default_factory=SynthConfig)
    prototypes: PrototypeConfig = field(default_factory=PrototypeConfig)
    strategy: str = "vanilla"
    lpcam: bool = True
    device: str = "auto"
    threshold: float = 0.3
    scales: tuple[float, ...] = (1.0,)
    examples: int = 8
    split: str = "train"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"demo strategy must be one of {', '.join(STRATEGIES)}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"demo.scales must be positive numbers, got {list(self.scales)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"demo.threshold must be in [0, 1], got {self.threshold}")


def _apply_section(obj: Any, items: Sequence[tuple[str, str]], section: str) -> Any:
    """A copy of dataclass ``obj`` with ``key=value`` items (YAML values) checked by type."""
    if not items:
        return obj
    data = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
    for key, text in items:
        try:
            data[key] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse {section}.{key}={text!r}: {e}") from None
    return dataclass_from_dict(type(obj), data, section)


def demo_config(
    overrides: Sequence[str] = (),
    *,
    preset: str = "synth-demo",
    strategy: str = "vanilla",
    lpcam: bool = True,
    device: str = "auto",
) -> DemoConfig:
    """Build the demo's configuration from the preset and ``key=value`` overrides.

    Overrides starting with ``synth.`` set :class:`~wsss.data.synthetic.SynthConfig` fields,
    ``lpcam.`` :class:`~wsss.maps.lpcam.PrototypeConfig` fields and ``demo.``
    :class:`DemoConfig` fields (``demo.scales=[1.0]``); the rest go to the classifier's
    configuration (``train.epochs=2``, ``model.backbone=resnet18``). Unless set, the
    classifier is validated once, after its last epoch (``train.val_every`` = epochs).

    Raises:
        ConfigError: Unknown key, bad value, unknown preset.
    """
    by_section: dict[str, list[tuple[str, str]]] = {s: [] for s in _SECTIONS}
    rest = []
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        if section in by_section:
            if not dot or "." in name:
                raise ConfigError(f"override {item!r}: expected {section}.<setting>=value")
            by_section[section].append((name, value))
        else:
            rest.append(item)
    classifier = load_config(preset, rest)
    demo_defaults = [f"train.device={device}"]
    if not any(item.strip().startswith("train.val_every=") for item in rest):
        # Validation does not change the weights: the demo validates once, after the last epoch.
        demo_defaults.append(f"train.val_every={classifier.train.epochs}")
    classifier = apply_overrides(classifier, demo_defaults)
    demo = DemoConfig(
        classifier=classifier,
        synth=_apply_section(SynthConfig(), by_section["synth"], "synth"),
        prototypes=_apply_section(PrototypeConfig(), by_section["lpcam"], "lpcam"),
        strategy=strategy,
        lpcam=lpcam,
        device=device,
    )
    nested = {"classifier", "synth", "prototypes"}
    for key, _ in by_section["demo"]:
        if key in nested:
            raise ConfigError(f"demo.{key} cannot be set directly; use its own keys")
    return _apply_section(demo, by_section["demo"], "demo")


def _strategy_config(classifier: Config, strategy: str, oc: Path) -> Config:
    train = dataclasses.replace(
        classifier.train,
        strategy=strategy,
        strategy_args={**classifier.train.strategy_args, "oc": str(oc)},
    )
    return dataclasses.replace(classifier, train=train)


def demo_pipeline(
    run: RunDir, demo: DemoConfig, data_root: str | os.PathLike, progress: bool = True
) -> Pipeline:
    """The demo's stages for ``run``, reading (and generating) the benchmark at ``data_root``."""
    data_root = Path(data_root)
    data = DataSpec(data_root, demo.split, "voc")
    data_config = dataclasses.replace(demo.classifier.data, root=str(data_root), format="voc")
    classifier = dataclasses.replace(demo.classifier, data=data_config)
    maps = {"scales": demo.scales, "device": demo.device, "progress": progress}
    evals = {"threshold": demo.threshold, "progress": progress}

    stages = [
        SynthStage(data_root, demo.synth, workers=min(2, os.cpu_count() or 1), progress=progress),
        TrainStage("cam", classifier, requires=("data",), progress=progress),
        MapsStage("cam", "cam", data, requires=("train_cam",), **maps),
        EvalStage("cam", data, requires=("maps_cam",), **evals),
    ]
    evaluations = ["eval_cam"]
    if demo.strategy != "vanilla":
        name = demo.strategy
        config = _strategy_config(classifier, name, run.checkpoint("cam"))
        stages += [
            TrainStage(name, config, requires=("data", "train_cam"), progress=progress),
            MapsStage(name, name, data, map_method="cam", requires=(f"train_{name}",), **maps),
            EvalStage(name, data, requires=(f"maps_{name}",), **evals),
        ]
        evaluations.append(f"eval_{name}")
    if demo.lpcam:
        stages.append(
            PrototypeStage(
                "cam",
                data,
                demo.prototypes,
                device=demo.device,
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
    title = (
        f"wsss demo: {demo.strategy}{' + LPCAM' if demo.lpcam else ''} on the synthetic benchmark"
    )
    stages.append(
        ReportStage(data, demo.examples, demo.threshold, title, requires=tuple(evaluations))
    )
    return Pipeline(stages)


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


def run_demo(
    out: str | os.PathLike = "runs/demo",
    data: str | os.PathLike | None = None,
    demo: DemoConfig | None = None,
    on_stage: Callable[[StageReport], None] | None = None,
    on_start: Callable[[Stage], None] | None = None,
    progress: bool = True,
) -> DemoResult:
    """Run (or resume) the demo into ``out``.

    Args:
        out: Run directory.
        data: Synthetic benchmark folder (default ``<out>/data``); generated if absent.
        demo: Settings (default :func:`demo_config` with no overrides).
        on_stage: Called with each stage's report as it finishes or is skipped.
        on_start: Called with each stage about to run.
        progress: Show progress bars.
    """
    start = time.perf_counter()
    demo = demo or demo_config()
    run = RunDir(out)
    data_root = Path(data) if data is not None else run.path / "data"
    pipeline = demo_pipeline(run, demo, data_root, progress=progress)
    seeds = {
        "synth": demo.synth.seed,
        "train": demo.classifier.train.seed,
        "lpcam": demo.prototypes.seed,
    }
    run.write_config(
        {"data_root": str(data_root), **dataclasses.asdict(demo)},
        seeds,
        extra={"command": list(sys.argv), "stages": pipeline.names},
    )
    reports = pipeline.run(run, on_stage=on_stage, on_start=on_start)
    return DemoResult(run, reports, run.results(), time.perf_counter() - start)
