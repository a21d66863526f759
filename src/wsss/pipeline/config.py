"""The pipeline's configuration: one root with a section per stage.

::

    model, data, train   the classifier (the training :class:`~wsss.config.Config`'s sections,
                         so a training preset such as ``synth-demo`` is a pipeline preset too)
    synth                the synthetic benchmark (:class:`~wsss.data.synthetic.SynthConfig`)
    maps                 class maps of every map stage (TTA scales, device)
    lpcam                LPCAM prototypes (:class:`~wsss.maps.lpcam.PrototypeConfig`)
    eval                 seed-mask evaluation (fixed threshold, sweep grid)
    report               the HTML report
    demo                 which stages the demo runs (strategy, LPCAM, split)

It loads like any other root (:func:`wsss.config.load_config` with ``cls=PipelineConfig``):
presets in ``wsss/configs/`` (``demo``, ``demo-compare``), ``key=value`` overrides such as
``synth.train=400``, ``lpcam.k=8``, ``maps.scales=[1.0,0.5]`` or ``train.epochs=4``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from wsss.config import (
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    load_config,
    neutral,
)
from wsss.config.core import Override
from wsss.data.synthetic import SynthConfig
from wsss.errors import ConfigError
from wsss.maps.lpcam import PrototypeConfig

__all__ = [
    "DemoSection",
    "EvalSection",
    "MapsSection",
    "PipelineConfig",
    "ReportSection",
    "check_threshold",
    "pipeline_config",
]

PAPER_SCALES = (1.0, 0.5, 1.5, 2.0)


def check_threshold(value: float, name: str) -> float:
    """``value`` if it is a number in [0, 1]; otherwise a :class:`ConfigError` naming ``name``."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


@dataclass
class MapsSection:
    """Class maps (every map stage of the pipeline).

    Attributes:
        scales: Test-time augmentation scales, each with its horizontal flip (the papers'
            1.0, 0.5, 1.5, 2.0 by default).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``; also used to fit
            the LPCAM prototypes.
    """

    scales: tuple[float, ...] = PAPER_SCALES
    device: str = neutral("auto")

    def __post_init__(self) -> None:
        if not self.scales or not all(math.isfinite(s) and s > 0 for s in self.scales):
            raise ConfigError(f"maps.scales must be positive numbers, got {list(self.scales)}")


@dataclass
class EvalSection:
    """Evaluation of seed masks against the ground truth.

    Attributes:
        threshold: Fixed background threshold of the seed masks (the papers' 0.3).
        thresholds: Grid of the oracle threshold sweep; None: 0.05 … 0.95 in steps of 0.05.
    """

    threshold: float = 0.3
    thresholds: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_threshold(self.threshold, "eval.threshold")
        if self.thresholds is not None:
            if not self.thresholds:
                raise ConfigError("eval.thresholds must list at least one threshold (or be null)")
            for t in self.thresholds:
                check_threshold(t, "eval.thresholds")


@dataclass
class ReportSection:
    """The HTML report.

    Attributes:
        examples: Images in the example grid.
    """

    examples: int = 8

    def __post_init__(self) -> None:
        if self.examples < 0:
            raise ConfigError(f"report.examples must be >= 0, got {self.examples}")


@dataclass
class DemoSection:
    """What ``wsss demo`` runs.

    Attributes:
        strategy: ``vanilla``, or ``pnoc`` (a vanilla classifier first, then P-NOC with it as
            the ordinary classifier).
        lpcam: Also fit LPCAM prototypes and compute LPCAM and LPCAM-F maps.
        split: Split on which maps are computed and evaluated.
    """

    strategy: Literal["vanilla", "pnoc"] = "vanilla"
    lpcam: bool = True
    split: str = "train"


@dataclass
class PipelineConfig:
    """Every setting of a pipeline run, one section per stage (see the module docstring).

    ``data.root`` is the dataset folder (None: ``<run>/data``, generated from ``synth``).
    The keys ``demo.scales``, ``demo.threshold`` and ``demo.examples`` of earlier versions are
    read as ``maps.scales``, ``eval.threshold`` and ``report.examples``.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    maps: MapsSection = field(default_factory=MapsSection)
    lpcam: PrototypeConfig = field(default_factory=PrototypeConfig)
    eval: EvalSection = field(default_factory=EvalSection)
    report: ReportSection = field(default_factory=ReportSection)
    demo: DemoSection = field(default_factory=DemoSection)

    RENAMED: ClassVar[Mapping[str, str]] = {
        "demo.scales": "maps.scales",
        "demo.threshold": "eval.threshold",
        "demo.examples": "report.examples",
    }

    @property
    def classifier(self) -> Config:
        """The training configuration of the pipeline's classifier."""
        return Config(model=self.model, data=self.data, train=self.train)

    def seeds(self) -> dict[str, int]:
        """The seeds of the run's random streams (for ``run_info.json``)."""
        return {"synth": self.synth.seed, "train": self.train.seed, "lpcam": self.lpcam.seed}


def pipeline_config(
    preset: str | Path | None = "demo",
    overrides: Iterable[Override] = (),
    *,
    shortcuts: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """Load a pipeline preset (or YAML file), then ``shortcuts`` and ``overrides``, in order.

    Args:
        preset: Preset name or YAML path (None: the dataclass defaults).
        overrides: ``key=value`` strings or ``(key, value)`` pairs (applied last, so they win).
        shortcuts: ``key → value`` from dedicated command-line options; None values are
            skipped.

    Raises:
        ConfigError: Unknown preset, key or value; the message names the setting.
    """
    given = [(k, v) for k, v in (shortcuts or {}).items() if v is not None]
    return load_config(preset, [*given, *overrides], cls=PipelineConfig)
