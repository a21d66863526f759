"""Pipeline stages of the refinement: affinity labels, boundary network, random walk.

For a map method ``m`` of the run (its seeds in ``run.maps_dir(m)``)::

    affinity_<m>          affinity labels in <run>/affinity/<m>/ → results.json affinity_<m>
    train_boundary_<m>    the boundary network on them (a TrainStage of the ``boundary`` task)
    rw_<m>                random-walk pseudo masks in <run>/rw/<m>/ and the walked maps in
                          <run>/maps/rw_<m>/ → results.json rw_<m>

``affinity_<m>`` holds the seed metrics over the confident pixels, the precision of the
confident pixels (overall, foreground, background) and the share of unsure pixels
(:func:`wsss.evaluate.confident.evaluate_confident`). ``rw_<m>`` is the evaluation of the
pseudo masks at the stage's background, with the oracle background threshold of the walked
maps under ``best``. :func:`refine_stages` builds the three stages for each method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wsss.config import Config, load_config
from wsss.config.sections import RefineSection
from wsss.pipeline.core import Stage
from wsss.pipeline.rundir import RunDir, results_entry
from wsss.pipeline.stages import DataSpec, TrainStage
from wsss.runtime.distributed import run_sharded

__all__ = [
    "AffinityStage",
    "RandomWalkStage",
    "affinity_dir",
    "boundary_base_config",
    "boundary_config",
    "refine_stages",
    "rw_dir",
]


def affinity_dir(run: RunDir, method: str) -> Path:
    """Folder of the affinity labels made from ``method``'s maps."""
    return run.path / "affinity" / method


def rw_dir(run: RunDir, method: str) -> Path:
    """Folder of the random-walk pseudo masks of ``method``'s seeds."""
    return run.path / "rw" / method


def _complete(folder: Path) -> bool:
    from wsss.refine.walk import mask_folder_record

    try:
        record = mask_folder_record(folder)
    except Exception:  # unreadable: redo
        return False
    return bool(record) and record.get("complete") is True


def _scored(data: DataSpec, eval_data: DataSpec) -> dict[str, Any]:
    """The scored split among a stage's params, only when it is not the computed one (so the
    records of runs made before the option stay valid)."""
    return {} if eval_data == data else {"eval_data": eval_data.as_dict()}


def _saliency(run: RunDir, saliency: str | None) -> Path | None:
    if saliency is None:
        return None
    path = Path(saliency).expanduser()
    return (path if path.is_absolute() else run.path / path).resolve()


class AffinityStage(Stage):
    """Affinity labels from ``method``'s maps, scored against the ground truth.

    Runs on every process under ``torchrun`` (the images, and their CRF, are sharded by
    rank); rank 0 then scores the folder.

    Args:
        method: Map name in the run (its seeds).
        data: The split (the boundary network's training images).
        thresholds: Preset of the conventional labels (``irn``, ``lpcam``).
        saliency: Folder of saliency maps (relative to the run, or absolute): saliency-aware
            labels (P-NOC §5) instead.
        crf: Label CRF (the reference: on).
        workers: CRF processes (0: in this process).
        requires: Upstream stages.
        eval_data: Split the labels are scored on (default ``data``; a subset of it).
    """

    distributed = True

    def __init__(
        self,
        method: str,
        data: DataSpec,
        thresholds: str = "irn",
        saliency: str | None = None,
        crf: bool = True,
        workers: int = 0,
        requires: tuple[str, ...] | None = None,
        eval_data: DataSpec | None = None,
    ) -> None:
        self.method, self.data, self.thresholds = method, data, thresholds
        self.saliency, self.crf, self.workers = saliency, crf, workers
        self.eval_data = eval_data or data
        self.name = f"affinity_{method}"
        self.requires = requires

    def outputs(self, run: RunDir) -> list[Path]:
        return [affinity_dir(run, self.method)]

    def params(self) -> Mapping[str, Any]:
        return {
            "maps": self.method,
            "thresholds": self.thresholds,
            "saliency": self.saliency,
            "crf": self.crf,
            "data": self.data.as_dict(),
            **_scored(self.data, self.eval_data),
        }

    def is_complete(self, run: RunDir) -> bool:
        return _complete(affinity_dir(run, self.method)) and self.name in run.results()

    def run(self, run: RunDir) -> None:
        from wsss.evaluate.confident import evaluate_confident
        from wsss.io.maps import MapStore
        from wsss.io.masks import MaskStore
        from wsss.refine.affinity import preset_thresholds
        from wsss.refine.folders import make_affinity_labels
        from wsss.refine.walk import claim_mask_folder, finish_mask_folder

        dataset = self.data.build()
        out = MaskStore(affinity_dir(run, self.method))
        saliency = _saliency(run, self.saliency)
        settings = {"kind": "affinity", **self.params(), "saliency": str(saliency)}

        def labels(ids: list[str]) -> None:
            make_affinity_labels(
                dataset,
                MapStore(run.maps_dir(self.method)),
                out,
                thresholds=self.thresholds,
                saliency=None if saliency is None else MapStore(saliency),
                crf="seeds" if self.crf else None,
                ids=ids,
                workers=self.workers,
            )

        if not run_sharded(
            dataset.ids, lambda: claim_mask_folder(out, settings, restart=True), labels
        ):
            return
        finish_mask_folder(out, dataset.ids)
        entry = evaluate_confident(self.eval_data.build(), out.root)
        entry["thresholds"] = list(preset_thresholds(self.thresholds))
        entry["saliency"] = self.saliency
        run.update_results({self.name: results_entry(entry)})


def boundary_config(
    base: Config, labels: Path, classifier: Path, epochs: int | None = None
) -> Config:
    """``base`` (a ``boundary`` preset) training on ``labels`` from ``classifier``'s backbone."""
    train = base.train
    args = {**train.strategy_args, "labels": str(labels), "classifier": str(classifier)}
    train = dataclasses.replace(
        train, strategy_args=args, epochs=train.epochs if epochs is None else int(epochs)
    )
    return dataclasses.replace(base, train=train)


class RandomWalkStage(Stage):
    """Random-walk pseudo masks of ``method``'s seeds with boundary network ``boundary``.

    Runs on every process under ``torchrun`` (the images are sharded by rank); rank 0 then
    evaluates: the masks at the stage's background, and the sweep of the walked maps' background
    threshold (an oracle number, under ``best``).

    Args:
        method: Map name of the seeds in the run.
        boundary: Name of the boundary network's training run (``run.checkpoint(boundary)``).
        data: The split.
        background: Constant background (preset name or number) when ``saliency`` is None.
        saliency: Folder of saliency maps (relative to the run, or absolute): ``1 − saliency``.
        crf: P-NOC's label CRF on each mask.
        exp_times, pad_to, batch_size: Of :func:`wsss.refine.walk.run_random_walk`.
        thresholds: Sweep grid of the walked maps (None: the default 0.05 … 0.80).
        device: Inference device.
        requires: Upstream stages.
        progress: Show progress bars.
        eval_data: Split the masks are scored on (default ``data``; a subset of it).
    """

    distributed = True

    def __init__(
        self,
        method: str,
        boundary: str,
        data: DataSpec,
        background: float | str = "irn",
        saliency: str | None = None,
        crf: bool = False,
        exp_times: int = 8,
        pad_to: int | None = 512,
        batch_size: int = 16,
        thresholds: Sequence[float] | None = None,
        device: str = "auto",
        requires: tuple[str, ...] | None = None,
        progress: bool = True,
        eval_data: DataSpec | None = None,
    ) -> None:
        self.method, self.boundary, self.data = method, boundary, data
        self.eval_data = eval_data or data
        self.background, self.saliency, self.crf = background, saliency, crf
        self.exp_times, self.pad_to, self.batch_size = exp_times, pad_to, batch_size
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]
        self.device, self.progress = device, progress
        self.name = f"rw_{method}"
        self.requires = requires

    def outputs(self, run: RunDir) -> list[Path]:
        return [rw_dir(run, self.method), run.maps_dir(self.name)]

    def params(self) -> Mapping[str, Any]:
        return {
            "maps": self.method,
            "boundary": self.boundary,
            "background": self.background,
            "saliency": self.saliency,
            "crf": self.crf,
            "exp_times": self.exp_times,
            "pad_to": self.pad_to,
            "thresholds": self.thresholds,
            "data": self.data.as_dict(),
            **_scored(self.data, self.eval_data),
        }

    def is_complete(self, run: RunDir) -> bool:
        return _complete(rw_dir(run, self.method)) and self.name in run.results()

    def run(self, run: RunDir) -> None:
        from wsss.evaluate import evaluate
        from wsss.io.maps import MapStore
        from wsss.io.masks import MaskStore
        from wsss.models import load_model
        from wsss.refine.walk import run_random_walk, rw_background
        from wsss.runtime import distributed, resolve_device

        info = distributed.dist_info()
        device = resolve_device(self.device, info.local_rank)
        model, _ = load_model(run.checkpoint(self.boundary), map_location=device)
        dataset = self.data.build()
        saliency = _saliency(run, self.saliency)
        out = rw_dir(run, self.method)
        run_random_walk(
            dataset,
            MapStore(run.maps_dir(self.method)),
            model,
            MaskStore(out),
            background=self.background if saliency is None else MapStore(saliency),
            crf="rw" if self.crf else None,
            exp_times=self.exp_times,
            pad_to=self.pad_to,
            device=device,
            batch_size=self.batch_size,
            maps_out=MapStore(run.maps_dir(self.name)),
            restart=True,
            record={"boundary": str(run.checkpoint(self.boundary))},
            progress=self.progress,
        )
        if not info.is_main:
            return
        scored = self.eval_data.build() if self.eval_data != self.data else dataset
        fixed = evaluate(scored, masks_dir=out, progress=False)
        best = evaluate(
            scored,
            maps_dir=run.maps_dir(self.name),
            sweep=True,
            thresholds=self.thresholds,
            progress=False,
        )
        best.pop("fixed", None)
        sweep = best.pop("sweep")
        if saliency is None:
            # A constant background is the seed threshold of the walked maps: the masks are
            # the sweep's point at that threshold.
            fixed["threshold"] = rw_background(self.background)
            fixed["sweep"] = sweep
        fixed["background"] = self.background if saliency is None else self.saliency
        run.update_results({self.name: results_entry(fixed, best)})


def refine_stages(
    config: RefineSection,
    data: DataSpec,
    boundary_base: Config,
    classifier: str = "cam",
    methods: Sequence[str] | None = None,
    producers: Mapping[str, str] | None = None,
    device: str = "auto",
    thresholds: Sequence[float] | None = None,
    progress: bool = True,
    eval_data: DataSpec | None = None,
) -> list[Stage]:
    """The refinement stages of every method of ``config.methods`` (or ``methods``).

    Args:
        config: The ``refine`` section.
        data: The split (seeds, training images and evaluation).
        boundary_base: Training configuration of the boundary network (``data`` set).
        classifier: Training run whose backbone initialises the boundary network.
        methods: Seeds to refine (default ``config.methods``).
        producers: Map name → the stage that writes it (default ``maps_<name>``; LPCAM's
            ``maps_lpcam`` writes ``lpcam`` and ``lpcam_f``).
        device: Device of the walk.
        thresholds: Sweep grid of the walked maps.
        progress: Show progress bars.
        eval_data: Split the labels and masks are scored on (default ``data``).
    """
    methods = list(config.methods if methods is None else methods)
    producers = dict(producers or {})
    stages: list[Stage] = []
    trained: dict[str, str] = {}
    for method in methods:
        stages.append(
            AffinityStage(
                method,
                data,
                thresholds=config.affinity_preset(method),
                saliency=config.saliency,
                crf=config.affinity_crf,
                workers=config.workers,
                requires=(producers.get(method, f"maps_{method}"),),
                eval_data=eval_data,
            )
        )
        if config.boundary == "per_method" or not trained:
            name = f"boundary_{method}"
            # The labels' path lies in the run; the stage's params hold the whole config.
            run_labels = Path("affinity") / method
            train_config = boundary_config(
                boundary_base,
                run_labels,
                Path("train") / classifier / "checkpoints" / "last.safetensors",
                config.epochs,
            )
            stages.append(
                _BoundaryTrainStage(
                    name,
                    train_config,
                    requires=(f"train_{classifier}", f"affinity_{method}"),
                    progress=progress,
                )
            )
            trained[method] = name
        boundary = trained.get(method) or next(iter(trained.values()))
        stages.append(
            RandomWalkStage(
                method,
                boundary,
                data,
                background=config.background_for(method),
                saliency=config.saliency if config.saliency_background else None,
                crf=config.crf,
                exp_times=config.exp_times,
                pad_to=config.pad_to,
                batch_size=config.batch_size,
                thresholds=thresholds,
                device=device,
                requires=(f"train_{boundary}", producers.get(method, f"maps_{method}")),
                progress=progress,
                eval_data=eval_data,
            )
        )
    return stages


class _BoundaryTrainStage(TrainStage):
    """A :class:`TrainStage` whose label and classifier paths are relative to the run."""

    def run(self, run: RunDir) -> None:
        from wsss.train.engine import train

        args = dict(self.config.train.strategy_args)
        for key in ("labels", "classifier"):
            path = Path(args[key])
            args[key] = str(path if path.is_absolute() else run.path / path)
        config = dataclasses.replace(
            self.config,
            train=dataclasses.replace(self.config.train, strategy_args=args),
        )
        out = run.train_dir(self.classifier)
        resume = (out / "checkpoints" / "state.json").is_file()
        train(config, out, resume=resume, progress=self.progress)


def boundary_base_config(
    preset: str, root: Path, split: str, fmt: str = "voc", device: str = "auto"
) -> Config:
    """The boundary network's training preset with the pipeline's data and device."""
    base = load_config(preset)
    data = dataclasses.replace(base.data, root=str(root), split=split, format=fmt)
    train = dataclasses.replace(base.train, device=device)
    return dataclasses.replace(base, data=data, train=train)
