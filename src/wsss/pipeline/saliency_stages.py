"""Pipeline stages of class-agnostic saliency (METHODS.md §6): C²AM, C²AM-H and their uses.

Training and maps reuse the standard stages (:class:`~wsss.pipeline.stages.TrainStage` with
``train.task=ccam``; :class:`~wsss.pipeline.stages.MapsStage` with the ``ccam`` map method).
This module adds what is specific to saliency:

- :class:`SaliencyEvalStage`: saliency metrics of a saliency-map folder → ``results.json``
  entry ``saliency_<name>`` (``miou``, ``precision``, ``recall`` at the fixed threshold,
  ``best`` = the oracle row, ``sweep``);
- :class:`SaliencySeedsStage`: seed masks of a class-map folder whose background comes from a
  saliency-map folder → entry ``<cam>_saliency`` with the usual seed metrics;
- :class:`PseudoSaliencyStage`: pseudo-saliency PNGs (threshold + two-label CRF) of a split.

:func:`ccam_training_config` builds the C²AM / C²AM-H training configuration of a run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsss.config import Config, load_config
from wsss.pipeline.core import Stage
from wsss.pipeline.rundir import RunDir
from wsss.pipeline.stages import DataSpec, _remove_inside
from wsss.runtime.distributed import run_sharded

__all__ = [
    "PseudoSaliencyStage",
    "SaliencyEvalStage",
    "SaliencySeedsStage",
    "ccam_training_config",
]


def ccam_training_config(
    preset: str | Path,
    data: DataSpec,
    backbone: Path | None = None,
    hints: Path | None = None,
    overrides: tuple[Any, ...] = (),
) -> Config:
    """The training configuration of a C²AM (``hints`` None) or C²AM-H stage.

    Args:
        preset: Training preset or YAML file (``synth-ccam`` in the demo).
        data: The training split (``data.root``, ``data.split``, ``data.format``).
        backbone: Checkpoint whose backbone initialises C²AM (``model.weights``), or None.
        hints: Class-map folder of the training split for C²AM-H.
        overrides: Further ``key=value`` items.
    """
    items: list[Any] = [
        ("data.root", str(data.root)),
        ("data.split", data.split),
        ("data.format", data.format),
        ("train.task", "ccam"),
    ]
    if backbone is not None:
        items.append(("model.weights", str(backbone)))
    config = load_config(preset, [*items, *overrides])
    if hints is not None:
        args = {**config.train.strategy_args, "hints": str(hints)}
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, strategy_args=args)
        )
    return config


class SaliencyEvalStage(Stage):
    """Score the saliency maps ``run.maps_dir(method)`` → ``results.json`` key ``key``.

    Args:
        method: Saliency maps of the run (``c2am``, ``c2am_h``).
        data: The split with ground truth.
        key: Results key (default ``saliency_<method>``).
        threshold: Fixed saliency threshold (the oracle row is chosen over a sweep).
        protocol: ``binary`` (default) or ``priors`` (P-NOC Table 6).
        requires: Upstream stages.
        progress: Show a progress bar.
    """

    def __init__(
        self,
        method: str,
        data: DataSpec,
        key: str | None = None,
        threshold: float = 0.2,
        protocol: str = "binary",
        requires: tuple[str, ...] | None = None,
        progress: bool = True,
    ) -> None:
        self.method, self.data, self.threshold, self.protocol = method, data, threshold, protocol
        self.key = key or f"saliency_{method}"
        self.name = f"eval_{self.key}"
        self.requires = requires
        self.progress = progress

    def params(self) -> Mapping[str, Any]:
        return {
            "threshold": self.threshold,
            "protocol": self.protocol,
            "data": self.data.as_dict(),
        }

    def is_complete(self, run: RunDir) -> bool:
        return self.key in run.results()

    def run(self, run: RunDir) -> None:
        from wsss.evaluate.saliency_split import evaluate_saliency

        result = evaluate_saliency(
            self.data.build(),
            run.maps_dir(self.method),
            self.protocol,
            self.threshold,
            progress=self.progress,
        )
        result["kind"] = "saliency"
        result["maps"] = self.method
        run.update_results({self.key: result})


class SaliencySeedsStage(Stage):
    """Seed masks of ``cam`` with the background of saliency ``saliency`` → ``results.json``.

    Args:
        cam: Class maps of the run (``cam``).
        saliency: Saliency maps of the run (``c2am_h``).
        data: The split with ground truth.
        key: Results key (default ``<cam>_saliency``).
        seed_threshold: None: background ``1 − saliency``; a value: ``saliency < value``.
        requires: Upstream stages.
        progress: Show a progress bar.
    """

    def __init__(
        self,
        cam: str,
        saliency: str,
        data: DataSpec,
        key: str | None = None,
        seed_threshold: float | None = None,
        requires: tuple[str, ...] | None = None,
        progress: bool = True,
    ) -> None:
        self.cam, self.saliency, self.data, self.seed_threshold = (
            cam,
            saliency,
            data,
            seed_threshold,
        )
        self.key = key or f"{cam}_saliency"
        self.name = f"eval_{self.key}"
        self.requires = requires
        self.progress = progress

    def params(self) -> Mapping[str, Any]:
        return {
            "cam": self.cam,
            "saliency": self.saliency,
            "seed_threshold": self.seed_threshold,
            "data": self.data.as_dict(),
        }

    def is_complete(self, run: RunDir) -> bool:
        return self.key in run.results()

    def run(self, run: RunDir) -> None:
        from wsss.evaluate.saliency_split import evaluate_saliency_seeds

        result = evaluate_saliency_seeds(
            self.data.build(),
            run.maps_dir(self.cam),
            run.maps_dir(self.saliency),
            self.seed_threshold,
            progress=self.progress,
        )
        result["kind"] = "seeds"
        run.update_results({self.key: result})


class PseudoSaliencyStage(Stage):
    """Pseudo-saliency masks of saliency ``method`` into ``run.path/pseudo_saliency/<method>``.

    Runs on every process under ``torchrun`` (the images, and their CRF, are sharded by rank).

    Args:
        method: Saliency maps of the run.
        data: The split.
        threshold: Salient above it (0.2).
        crf_iterations: Two-label CRF iterations (0: none).
        workers: CRF processes (0: this process).
        requires: Upstream stages.
    """

    distributed = True

    def __init__(
        self,
        method: str,
        data: DataSpec,
        threshold: float = 0.2,
        crf_iterations: int = 10,
        workers: int = 0,
        requires: tuple[str, ...] | None = None,
    ) -> None:
        self.method, self.data = method, data
        self.threshold, self.crf_iterations, self.workers = threshold, crf_iterations, workers
        self.name = f"pseudo_saliency_{method}"
        self.requires = requires

    @staticmethod
    def folder(run: RunDir, method: str) -> Path:
        """Where the masks of ``method`` go."""
        return run.path / "pseudo_saliency" / method

    def outputs(self, run: RunDir) -> list[Path]:
        return [self.folder(run, self.method) / "complete.json"]

    def params(self) -> Mapping[str, Any]:
        return {
            "threshold": self.threshold,
            "crf_iterations": self.crf_iterations,
            "data": self.data.as_dict(),
        }

    def reset(self, run: RunDir) -> None:
        _remove_inside(run, self.folder(run, self.method))

    def run(self, run: RunDir) -> None:
        from wsss.io.atomic import atomic_write_json
        from wsss.io.maps import MapStore
        from wsss.io.masks import MaskStore
        from wsss.refine.saliency import make_pseudo_saliency

        out = self.folder(run, self.method)
        dataset = self.data.build()

        def masks(ids: list[str]) -> None:
            make_pseudo_saliency(
                dataset,
                MapStore(run.maps_dir(self.method)),
                MaskStore(out),
                threshold=self.threshold,
                crf_iterations=self.crf_iterations,
                ids=ids,
                workers=self.workers,
            )

        if not run_sharded(dataset.ids, lambda: None, masks):
            return
        missing = [i for i in dataset.ids if not MaskStore(out).has(i)]
        if missing:
            raise RuntimeError(f"pseudo-saliency masks missing after the stage: {missing[:5]}")
        atomic_write_json(out / "complete.json", {**self.params(), "count": len(dataset)})
