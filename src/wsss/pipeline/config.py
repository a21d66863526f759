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
    run                  which stages the run has (strategy, LPCAM, C²AM, segmentation, splits)

It loads like any other root (:func:`wsss.config.load_config` with ``cls=PipelineConfig``):
presets in ``wsss/configs/pipelines/`` (``synth-full``, ``voc12-pnoc``, ``voc12-lpcam-irn``,
``coco14-lpcam-irn``; :func:`pipeline_presets`) and ``wsss/configs/`` (``demo``,
``demo-compare``), ``key=value`` overrides such as ``synth.train=400``, ``lpcam.k=8``,
``maps.scales=[1.0,0.5]`` or ``train.epochs=4``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from wsss.config import Config, DataConfig, ModelConfig, TrainConfig
from wsss.config.core import Override, apply_overrides, dataclass_from_dict, read_preset
from wsss.config.sections import (
    DemoSection,
    EvalSection,
    MapsSection,
    RefineSection,
    ReportSection,
    RunSection,
    SaliencySection,
    check_threshold,
)
from wsss.data.synthetic import SynthConfig
from wsss.errors import ConfigError
from wsss.maps.lpcam import PrototypeConfig
from wsss.pipeline.segmentation import SegmentationSection

__all__ = [
    "DemoSection",
    "EvalSection",
    "MapsSection",
    "PipelineConfig",
    "RefineSection",
    "ReportSection",
    "RunSection",
    "check_threshold",
    "pipeline_config",
    "pipeline_config_from_dict",
    "pipeline_presets",
    "resolve_pipeline_preset",
]

_RUN_KEYS = ("strategy", "lpcam", "split", "ccam")  # the ``demo`` section's keys before ``run``


@dataclass
class PipelineConfig:
    """Every setting of a pipeline run, one section per stage (see the module docstring).

    ``data.root`` is the dataset folder (None: ``<run>/data``, generated from ``synth``).
    The keys ``demo.scales``, ``demo.threshold`` and ``demo.examples`` of earlier versions are
    read as ``maps.scales``, ``eval.threshold`` and ``report.examples``, the section ``demo``
    as ``run``.
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
    run: RunSection = field(default_factory=RunSection)

    RENAMED: ClassVar[Mapping[str, str]] = {
        "demo.scales": "maps.scales",
        "demo.threshold": "eval.threshold",
        "demo.examples": "report.examples",
        **{f"demo.{key}": f"run.{key}" for key in _RUN_KEYS},
    }

    @property
    def classifier(self) -> Config:
        """The training configuration of the pipeline's classifier."""
        return Config(model=self.model, data=self.data, train=self.train)

    def seeds(self) -> dict[str, int]:
        """The seeds of the run's random streams (for ``run_info.json``)."""
        return {"synth": self.synth.seed, "train": self.train.seed, "lpcam": self.lpcam.seed}


def pipeline_presets() -> list[str]:
    """Names of the pipeline presets shipped in ``wsss/configs/pipelines/``."""
    folder = resources.files("wsss") / "configs" / "pipelines"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_pipeline_preset(preset: str | Path) -> str | Path:
    """A pipeline preset's file (``wsss/configs/pipelines/<name>.yaml``), else ``preset`` as
    given: a YAML path or a preset of ``wsss/configs/`` (``demo``, ``demo-compare``)."""
    if isinstance(preset, str) and "/" not in preset and not preset.endswith((".yaml", ".yml")):
        resource = resources.files("wsss") / "configs" / "pipelines" / f"{preset}.yaml"
        if resource.is_file():
            return Path(str(resource))
    return preset


def pipeline_config_from_dict(doc: Mapping[str, Any]) -> PipelineConfig:
    """A :class:`PipelineConfig` from its nested dict (a preset, a run's ``config.yaml``).

    Top-level keys that are not sections (``config.yaml``'s extras such as ``runs``) are
    ignored; a ``demo`` section of earlier versions is read as ``run``.

    Raises:
        ConfigError: Unknown key or bad value inside a section; the message names it.
    """
    doc = dict(doc)
    legacy = doc.pop("demo", None)
    if isinstance(legacy, Mapping):
        renamed = {
            PipelineConfig.RENAMED.get(f"demo.{k}", f"run.{k}"): v for k, v in legacy.items()
        }
        for key, value in renamed.items():
            section, _, name = key.partition(".")
            doc.setdefault(section, {})
            if isinstance(doc[section], dict):
                doc[section] = {name: value, **doc[section]}
    names = {f.name for f in fields(PipelineConfig)}
    return dataclass_from_dict(PipelineConfig, {k: v for k, v in doc.items() if k in names})


def pipeline_config(
    preset: str | Path | None = "demo",
    overrides: Iterable[Override] = (),
    *,
    shortcuts: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """Load a pipeline preset (or YAML file), then ``shortcuts`` and ``overrides``, in order.

    Args:
        preset: Preset name (:func:`pipeline_presets`, or ``demo``/``demo-compare``), YAML
            path, or None for the dataclass defaults.
        overrides: ``key=value`` strings or ``(key, value)`` pairs (applied last, so they win).
        shortcuts: ``key → value`` from dedicated command-line options; None values are
            skipped.

    Raises:
        ConfigError: Unknown preset, key or value; the message names the setting.
    """
    given = [(k, v) for k, v in (shortcuts or {}).items() if v is not None]
    if preset is None:
        base = PipelineConfig()
    else:
        try:
            doc = read_preset(resolve_pipeline_preset(preset))
        except ConfigError as e:
            if "unknown preset" in str(e) and isinstance(preset, str):
                names = ", ".join(pipeline_presets())
                raise ConfigError(f"{e}; pipeline presets: {names}") from None
            raise
        base = pipeline_config_from_dict(doc)
    return apply_overrides(base, [*given, *overrides])
