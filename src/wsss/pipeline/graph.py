"""The stage graph of a whole run, built from one :class:`~wsss.pipeline.config.PipelineConfig`.

``wsss run PRESET`` and ``wsss demo`` build it with :func:`build_pipeline`
(:mod:`wsss.pipeline.runner` runs it); ``wsss status`` and ``wsss report`` rebuild it from the
run's ``config.yaml``. The stages, each present when its settings ask for it (section ``run``
unless named)::

    data                 the synthetic benchmark, generated if absent (run.synthetic)
    train_cam            the pipeline's classifier (model, data, train)
    maps_cam, eval_cam   its CAMs on run.split; seeds scored on run.eval_split
    train_<s>, maps_<s>, eval_<s>       a strategy's classifier (run.strategy; OC: cam)
    lpcam_fit, maps_lpcam, eval_lpcam, eval_lpcam_f                        (run.lpcam)
    train_c2am(_h), maps_c2am(_h), eval_saliency_c2am(_h), pseudo_saliency_c2am_h,
    eval_<hints>_saliency                                                   (run.ccam)
    affinity_<m>, train_boundary_<m>, rw_<m>               (refine.methods: pseudo masks)
    train_segmentation, predict_segmentation, eval_segmentation       (run.segmentation)
    report

Under ``torchrun`` every training runs with DDP and every inference stage (maps, random
walk, segmentation) shards its images over the processes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss.config import Config, apply_overrides, load_config
from wsss.config.sections import NEEDS_OC, STRATEGY_NAMES
from wsss.errors import ConfigError
from wsss.pipeline.config import PipelineConfig
from wsss.pipeline.core import Pipeline, Stage
from wsss.pipeline.refine_stages import (
    AffinityStage,
    RandomWalkStage,
    boundary_base_config,
    refine_stages,
    rw_dir,
)
from wsss.pipeline.rundir import RunDir
from wsss.pipeline.saliency_stages import (
    PseudoSaliencyStage,
    SaliencyEvalStage,
    SaliencySeedsStage,
    ccam_training_config,
)
from wsss.pipeline.segmentation import segmentation_stages
from wsss.pipeline.stages import (
    DataSpec,
    EvalStage,
    MapsStage,
    PrototypeStage,
    ReportStage,
    SynthStage,
    TrainStage,
)

__all__ = ["build_pipeline", "data_root", "strategy_config"]

LPCAM_MAPS = ("lpcam", "lpcam_f")


def data_root(run: RunDir, config: PipelineConfig) -> Path:
    """The dataset folder: ``data.root``, or ``<run>/data`` for the synthetic benchmark.

    Raises:
        ConfigError: ``data.root`` is not set and the run does not generate its data.
    """
    if config.data.root:
        return Path(config.data.root).expanduser().resolve()
    if not config.run.synthetic:
        raise ConfigError(
            "data.root is not set: pass the dataset folder with --data DIR (or --set "
            "data.root=DIR); only run.synthetic=true generates its own data"
        )
    return (run.path / "data").resolve()


@dataclass
class _Graph:
    """What the stage builders share while the graph is assembled."""

    run: RunDir
    config: PipelineConfig
    root: Path
    progress: bool
    stages: list[Stage] = dataclasses.field(default_factory=list)
    evaluations: list[str] = dataclasses.field(default_factory=list)
    producers: dict[str, str] = dataclasses.field(default_factory=dict)  # map → its stage

    @property
    def fmt(self) -> str:
        return "voc" if self.config.run.synthetic else self.config.data.format

    @property
    def data_stage(self) -> tuple[str, ...]:
        return ("data",) if self.config.run.synthetic else ()

    def split(self, name: str) -> DataSpec:
        return DataSpec(self.root, name, self.fmt)

    @property
    def maps_split(self) -> DataSpec:
        return self.split(self.config.run.split)

    @property
    def scored(self) -> DataSpec:
        return self.split(self.config.run.scored_split)

    def classifier(self) -> Config:
        config = self.config.classifier
        data = dataclasses.replace(config.data, root=str(self.root), format=self.fmt)
        return dataclasses.replace(config, data=data)

    def maps(self, name: str, classifier: str, method: str | None = None, **kw: Any) -> MapsStage:
        maps = self.config.maps
        stage = MapsStage(
            name,
            classifier,
            self.maps_split,
            method,
            scales=maps.scales,
            device=maps.device,
            progress=self.progress,
            **kw,
        )
        for output in stage.map_names.values():
            self.producers[output] = stage.name
        return stage

    def evaluate(self, method: str) -> EvalStage:
        stage = EvalStage(
            method,
            self.scored,
            self.config.eval.threshold,
            self.config.eval.thresholds,
            requires=(self.producers[method],),
            progress=self.progress,
        )
        self.evaluations.append(stage.name)
        return stage


def strategy_config(classifier: Config, config: PipelineConfig, oc: Path) -> Config:
    """The strategy classifier's training configuration (``run.strategy``, OC ``oc``).

    Its model and dataset are ``classifier``'s; its training loop is ``run.strategy_preset``'s
    (or ``classifier``'s), with ``run.strategy_train`` applied last.
    """
    rs = config.run
    if rs.strategy_preset:
        train = load_config(rs.strategy_preset).train
        train = dataclasses.replace(train, device=classifier.train.device)
        base = dataclasses.replace(classifier, train=train)
    else:
        base = classifier
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, strategy=rs.strategy))
    base = apply_overrides(base, rs.strategy_train)
    args = dict(base.train.strategy_args)
    if rs.strategy in NEEDS_OC:
        args["oc"] = str(oc)
    return dataclasses.replace(base, train=dataclasses.replace(base.train, strategy_args=args))


def _classifiers(g: _Graph) -> None:
    rs = g.config.run
    classifier = g.classifier()
    if classifier.train.strategy != "vanilla":
        raise ConfigError(
            f"train.strategy is {classifier.train.strategy!r}, but the run's first classifier "
            "(cam) is the vanilla CAM, the ordinary classifier of the others: set "
            f"run.strategy={classifier.train.strategy} (and train.strategy=vanilla) to train it "
            "as a second classifier"
        )
    if rs.synthetic:
        g.stages.append(
            SynthStage(
                g.root, g.config.synth, workers=min(2, os.cpu_count() or 1), progress=g.progress
            )
        )
    g.stages.append(TrainStage("cam", classifier, requires=g.data_stage, progress=g.progress))
    g.stages.append(g.maps("cam", "cam", requires=("train_cam",)))
    g.stages.append(g.evaluate("cam"))
    if rs.strategy != "vanilla":
        name = rs.strategy
        config = strategy_config(classifier, g.config, g.run.checkpoint("cam"))
        needs = (*g.data_stage, "train_cam") if name in NEEDS_OC else g.data_stage
        g.stages.append(TrainStage(name, config, requires=needs, progress=g.progress))
        g.stages.append(g.maps(name, name, "cam", requires=(f"train_{name}",)))
        g.stages.append(g.evaluate(name))
    if rs.lpcam:
        g.stages.append(
            PrototypeStage(
                "cam",
                g.maps_split,
                g.config.lpcam,
                device=g.config.maps.device,
                requires=("train_cam", "maps_cam"),
                progress=g.progress,
            )
        )
        g.stages.append(
            g.maps("lpcam", "cam", "lpcam", prototypes="lpcam", requires=("lpcam_fit",))
        )
        g.stages += [g.evaluate(m) for m in LPCAM_MAPS]


def _saliency(g: _Graph) -> None:
    config, sal = g.config, g.config.saliency
    if config.run.split != config.data.split:
        raise ConfigError(
            f"run.ccam needs run.split ({config.run.split!r}) = data.split "
            f"({config.data.split!r}): C²AM-H's hints are the maps of its training images; "
            "set run.ccam=false otherwise"
        )
    if sal.hints not in g.producers:
        raise ConfigError(
            f"saliency.hints: the run makes no maps {sal.hints!r}; choose among "
            f"{', '.join(sorted(g.producers))}"
        )
    trained = [s.classifier for s in g.stages if isinstance(s, TrainStage)]
    if sal.backbone is not None and sal.backbone not in trained:
        raise ConfigError(
            f"saliency.backbone: the run trains no classifier {sal.backbone!r}; choose among "
            f"{', '.join(trained)} or null (the preset's own weights)"
        )
    shared = (
        ("train.device", config.train.device),
        ("train.num_workers", config.train.num_workers),
        *sal.train,
    )
    train_data = g.maps_split
    backbone = None if sal.backbone is None else g.run.checkpoint(sal.backbone)
    hints = g.run.maps_dir(sal.hints)
    plain = ccam_training_config(sal.train_preset, train_data, backbone, overrides=shared)
    hinted = ccam_training_config(sal.train_preset, train_data, backbone, hints, overrides=shared)
    needs = (*g.data_stage, *(() if sal.backbone is None else (f"train_{sal.backbone}",)))
    evals = {"threshold": sal.threshold, "progress": g.progress}
    g.stages += [
        TrainStage("c2am", plain, requires=needs, progress=g.progress),
        TrainStage(
            "c2am_h", hinted, requires=(*needs, g.producers[sal.hints]), progress=g.progress
        ),
        g.maps("c2am", "c2am", "ccam", requires=("train_c2am",)),
        g.maps("c2am_h", "c2am_h", "ccam", requires=("train_c2am_h",)),
        SaliencyEvalStage("c2am", g.scored, requires=("maps_c2am",), **evals),
        SaliencyEvalStage("c2am_h", g.scored, requires=("maps_c2am_h",), **evals),
    ]
    g.evaluations += ["eval_saliency_c2am", "eval_saliency_c2am_h"]
    if sal.pseudo_masks:
        g.stages.append(
            PseudoSaliencyStage(
                "c2am_h",
                g.maps_split,
                sal.threshold,
                sal.crf_iterations,
                workers=0,  # small images: spawning workers costs more than the CRF they share
                requires=("maps_c2am_h",),
            )
        )
    seeds = SaliencySeedsStage(
        sal.hints,
        "c2am_h",
        g.scored,
        seed_threshold=sal.seed_threshold,
        requires=(g.producers[sal.hints], "maps_c2am_h"),
        progress=g.progress,
    )
    g.stages.append(seeds)
    g.evaluations.append(seeds.name)


def _saliency_producer(g: _Graph, folder: str | None) -> str | None:
    """The stage writing ``refine.saliency`` when it is one of the run's map folders."""
    if folder is None:
        return None
    path = Path(folder)
    if path.is_absolute() or len(path.parts) != 2 or path.parts[0] != "maps":
        return None  # a folder made elsewhere
    return g.producers.get(path.parts[1])


def _refinement(g: _Graph) -> list[str]:
    config = g.config
    # Seeds a run with other run.* choices would make are skipped (``wsss demo --no-lpcam``
    # keeps refine.methods=[cam, lpcam]); other names are mistakes.
    possible = {"cam", *STRATEGY_NAMES, *LPCAM_MAPS} - {"vanilla"}
    unknown = [m for m in config.refine.methods if m not in possible]
    if unknown:
        raise ConfigError(
            f"refine.methods: no run makes seeds {unknown}; choose among "
            f"{', '.join(sorted(possible))} (those of run.strategy and run.lpcam)"
        )
    methods = [m for m in config.refine.methods if m in g.producers]
    if not methods:
        return []
    saliency = config.refine.saliency
    saliency_stage = _saliency_producer(g, saliency)
    if saliency is not None and saliency.startswith("maps/") and saliency_stage is None:
        raise ConfigError(
            f"refine.saliency: the run makes no maps {saliency!r} (set run.ccam=true for "
            "maps/c2am_h)"
        )
    base = boundary_base_config(
        config.refine.preset,
        g.root,
        config.run.split,
        g.fmt,
        device=config.train.device,
    )
    stages = refine_stages(
        config.refine,
        g.maps_split,
        base,
        classifier="cam",
        methods=methods,
        producers=g.producers,
        device=config.maps.device,
        thresholds=config.eval.thresholds,
        eval_data=g.scored,
        progress=g.progress,
    )
    for stage in stages:
        if saliency_stage and isinstance(stage, (AffinityStage, RandomWalkStage)):
            stage.requires = (*(stage.requires or ()), saliency_stage)
    g.stages += stages
    g.evaluations += [s.name for s in stages if not s.name.startswith("train_")]
    return methods


def _segmentation(g: _Graph, refined: Sequence[str]) -> None:
    rs = g.config.run
    pseudo = rs.pseudo_masks or (refined[0] if refined else None)
    if pseudo in LPCAM_MAPS and not rs.lpcam and rs.pseudo_masks and refined:
        pseudo = refined[0]  # run.lpcam=false: the pseudo masks of the first refined seeds
    if pseudo is None or pseudo not in refined:
        raise ConfigError(
            "run.segmentation trains on random-walk pseudo masks: "
            + (
                f"run.pseudo_masks={pseudo!r} is not among refine.methods {list(refined)}"
                if pseudo is not None
                else "set refine.methods (e.g. [cam])"
            )
        )
    if rs.split != g.config.data.split:
        raise ConfigError(
            f"run.segmentation trains on data.split ({g.config.data.split!r}) but the pseudo "
            f"masks cover run.split ({rs.split!r}); make them equal"
        )
    data = dataclasses.replace(g.config.data, root=str(g.root), format=g.fmt)
    stages = segmentation_stages(
        g.config.segmentation,
        data,
        rw_dir(g.run, pseudo),
        requires=(*g.data_stage, f"rw_{pseudo}"),
        progress=g.progress,
    )
    g.stages += stages
    g.evaluations.append(stages[-1].name)


_STRATEGY_TITLES = {"puzzle": "Puzzle-CAM", "occse": "OC-CSE", "poc": "P-OC", "pnoc": "P-NOC"}


def _title(config: PipelineConfig) -> str:
    """The report's title: the stages of the run, e.g. ``CAM → LPCAM → random walk → …``."""
    rs = config.run
    parts = ["CAM"]
    if rs.strategy != "vanilla":
        parts.append(_STRATEGY_TITLES[rs.strategy])
    if rs.lpcam:
        parts.append("LPCAM")
    if rs.ccam:
        parts.append("C²AM-H")
    if config.refine.methods:
        parts.append("random walk")
    if rs.segmentation:
        parts.append(config.segmentation.train.strategy_args.get("architecture", "segmentation"))
    data = "the synthetic benchmark" if rs.synthetic else f"{config.data.format} {rs.split}"
    return f"wsss: {' → '.join(parts)} on {data}"


def build_pipeline(
    run: RunDir,
    config: PipelineConfig,
    root: str | os.PathLike | None = None,
    progress: bool = True,
) -> Pipeline:
    """The stages of ``config`` for ``run`` (see the module docstring).

    Args:
        run: The run directory.
        config: The settings.
        root: Dataset folder (default :func:`data_root`).
        progress: Show progress bars.

    Raises:
        ConfigError: Settings that ask for maps the run does not make (``refine.methods``,
            ``saliency.hints``, ``run.pseudo_masks``), or splits that do not fit together.
    """
    root = Path(root).resolve() if root is not None else data_root(run, config)
    g = _Graph(run, config, root, progress)
    _classifiers(g)
    if config.run.ccam:
        _saliency(g)
    refined = _refinement(g)
    if config.run.segmentation:
        _segmentation(g, refined)
    g.stages.append(
        ReportStage(
            g.scored,
            config.report.examples,
            config.eval.threshold,
            _title(config),
            requires=tuple(g.evaluations),
        )
    )
    return Pipeline(g.stages)
