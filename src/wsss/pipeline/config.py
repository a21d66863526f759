"""The pipeline's configuration: one root with a section per stage.

::

    model, data, train   the classifier (the training :class:`~wsss.config.Config`'s sections,
                         so a training preset such as ``synth-demo`` is a pipeline preset too)
    synth                the synthetic benchmark (:class:`~wsss.data.synthetic.SynthConfig`)
    maps                 class maps of every map stage (TTA scales, device)
    lpcam                LPCAM prototypes (:class:`~wsss.maps.lpcam.PrototypeConfig`)
    eval                 seed-mask evaluation (fixed threshold, sweep grid)
    saliency             C²AM saliency: thresholds, pseudo-saliency CRF, training preset
    refine               affinity labels, boundary network, random walk (which seeds, presets)
    report               the HTML report
    segmentation         the segmentation network, its inference and evaluation
                         (:class:`~wsss.pipeline.segmentation.SegmentationSection`)
    demo                 which stages the demo runs (strategy, LPCAM, split)

It loads like any other root (:func:`wsss.config.load_config` with ``cls=PipelineConfig``):
presets in ``wsss/configs/`` (``demo``, ``demo-compare``), ``key=value`` overrides such as
``synth.train=400``, ``lpcam.k=8``, ``maps.scales=[1.0,0.5]`` or ``train.epochs=4``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from wsss.config import Config, DataConfig, ModelConfig, TrainConfig, load_config
from wsss.config.core import Override
from wsss.config.sections import (
    DemoSection,
    EvalSection,
    MapsSection,
    RefineSection,
    ReportSection,
    SaliencySection,
    check_threshold,
)
from wsss.data.synthetic import SynthConfig
from wsss.maps.lpcam import PrototypeConfig
from wsss.pipeline.segmentation import SegmentationSection

__all__ = [
    "DemoSection",
    "EvalSection",
    "MapsSection",
    "PipelineConfig",
    "RefineSection",
    "ReportSection",
    "check_threshold",
    "pipeline_config",
]


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
    saliency: SaliencySection = field(default_factory=SaliencySection)
    refine: RefineSection = field(default_factory=RefineSection)
    report: ReportSection = field(default_factory=ReportSection)
    segmentation: SegmentationSection = field(default_factory=SegmentationSection)
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
