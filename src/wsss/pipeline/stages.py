"""The stages of a WSSS run: data, classifier training, class maps, evaluation, report.

Each stage reads and writes artefacts in the run directory (:class:`~wsss.pipeline.RunDir`)
through the library's public functions; the CLI commands of the same steps call the same
functions, so a pipeline is nothing more than these calls in order, made resumable.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsss.config import Config, result_params
from wsss.data.base import SegmentationDataset
from wsss.pipeline.core import Stage
from wsss.pipeline.rundir import RunDir, results_entry

__all__ = [
    "DataSpec",
    "EvalStage",
    "MapsStage",
    "PrototypeStage",
    "ReportStage",
    "SynthStage",
    "TrainStage",
    "write_run_report",
]


@dataclass(frozen=True)
class DataSpec:
    """Which split of which dataset a stage reads.

    Attributes:
        root: Dataset root (stored resolved: absolute, symbolic links followed).
        split: Split name.
        format: Reader name of :func:`wsss.data.datasets.build_dataset`.
    """

    root: Path
    split: str = "train"
    format: str = "voc"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    def build(self) -> SegmentationDataset:
        """Open the split."""
        from wsss.data.datasets import build_dataset

        return build_dataset(self.format, self.root, self.split)

    def as_dict(self) -> dict[str, str]:
        return {"root": str(self.root), "split": self.split, "format": self.format}


def _remove_inside(run: RunDir, path: Path) -> None:
    if run.contains(path) and path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


class SynthStage(Stage):
    """Generate the synthetic benchmark at ``root`` unless it is already there.

    A dataset inside the run directory belongs to the run and is regenerated when its
    settings change; one outside (a shared cache) is never overwritten: a folder holding
    another dataset is an error.

    Args:
        root: Dataset folder.
        config: Generator settings (:class:`wsss.data.synthetic.SynthConfig`).
        workers: Rendering processes.
        progress: Show a progress bar.
    """

    name = "data"

    def __init__(self, root: Path, config: Any, workers: int = 1, progress: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self.config, self.workers, self.progress = config, workers, progress

    def outputs(self, run: RunDir) -> list[Path]:
        return [self.root / "synth.json"]

    def params(self) -> Mapping[str, Any]:
        return {"root": str(self.root), "synth": self.config.to_dict()}

    def is_complete(self, run: RunDir) -> bool:
        from wsss.data.synthetic import load_synth_meta

        try:
            config, stats = load_synth_meta(self.root)
        except Exception:  # absent or unreadable: generate
            return False
        return stats is not None and config == self.config

    def reset(self, run: RunDir) -> None:
        pass  # generate_synthetic completes or replaces the folder itself

    def run(self, run: RunDir) -> None:
        from wsss.data.synthetic import generate_synthetic

        generate_synthetic(
            self.root,
            self.config,
            progress=self.progress,
            force=run.contains(self.root),
            workers=self.workers,
        )


class TrainStage(Stage):
    """Train classifier ``name`` into ``run.train_dir(name)``; an interrupted run resumes.

    Runs on every process under ``torchrun`` (DDP). Its parameters are the configuration
    without the result-neutral settings (:func:`wsss.config.result_params`).

    Args:
        name: Classifier name (the stage is ``train_<name>``).
        config: Full configuration (``data.root`` set; stored resolved).
        requires: Stages whose outputs the training reads (e.g. the OC of P-NOC).
        progress: Show progress bars.
    """

    distributed = True

    def __init__(
        self,
        name: str,
        config: Config,
        requires: tuple[str, ...] | None = None,
        progress: bool = True,
    ) -> None:
        if config.data.root is not None:
            root = str(Path(config.data.root).expanduser().resolve())
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=root))
        self.classifier, self.config, self.progress = name, config, progress
        self.name = f"train_{name}"
        self.requires = requires

    def outputs(self, run: RunDir) -> list[Path]:
        return [run.train_dir(self.classifier)]

    def params(self) -> Mapping[str, Any]:
        return result_params(self.config)

    def is_complete(self, run: RunDir) -> bool:
        return run.checkpoint(self.classifier).is_file()

    def run(self, run: RunDir) -> None:
        from wsss.train.engine import train

        out = run.train_dir(self.classifier)
        # A saved state here was made with these inputs (stale ones are reset): resume it.
        resume = (out / "checkpoints" / "state.json").is_file()
        train(self.config, out, resume=resume, progress=self.progress)


class MapsStage(Stage):
    """Maps of every image of a split with one map method (any of ``wsss.maps.methods``).

    A one-output method writes ``run.maps_dir(name)`` (so CAM maps of the ``pnoc``
    classifier can be ``maps/pnoc``); a method with several outputs writes
    ``run.maps_dir(output)`` for each (``lpcam`` → ``maps/lpcam`` and ``maps/lpcam_f`` from
    one feature pass). The stage is complete when every folder's settings record says so; an
    interrupted stage resumes.

    Args:
        name: Stage suffix (``maps_<name>``) and the maps' name for a one-output method.
        classifier: Name of the trained classifier the method runs.
        data: The split.
        map_method: Registered map method (default: ``name``).
        scales: Test-time augmentation scales.
        device: Inference device (``auto``: CUDA when available).
        prototypes: For methods that need prototypes (``lpcam``), the name of the
            :class:`PrototypeStage` output.
        requires: Upstream stages.
        progress: Show a progress bar.
    """

    distributed = True  # run_maps shards the images by rank

    def __init__(
        self,
        name: str,
        classifier: str,
        data: DataSpec,
        map_method: str | None = None,
        scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
        device: str = "auto",
        prototypes: str | None = None,
        requires: tuple[str, ...] | None = None,
        progress: bool = True,
    ) -> None:
        self.method, self.classifier, self.data = name, classifier, data
        self.map_method = map_method or name
        self.scales = tuple(float(s) for s in scales)
        self.device, self.prototypes, self.progress = device, prototypes, progress
        self.name = f"maps_{name}"
        self.requires = requires

    @property
    def map_names(self) -> dict[str, str]:
        """Output of the method → name of its maps in the run (its ``run.maps_dir``)."""
        from wsss.maps.methods import get_map_method

        outputs = get_map_method(self.map_method).outputs
        return {outputs[0]: self.method} if len(outputs) == 1 else {o: o for o in outputs}

    def folders(self, run: RunDir) -> dict[str, Path]:
        """Output of the method → its folder in ``run``."""
        return {output: run.maps_dir(name) for output, name in self.map_names.items()}

    def outputs(self, run: RunDir) -> list[Path]:
        from wsss.io.maps import MapStore

        return [MapStore(f).manifest_path for f in self.folders(run).values()]

    def is_complete(self, run: RunDir) -> bool:
        from wsss.io.maps import MapStore

        return all(MapStore(f).is_complete() for f in self.folders(run).values())

    def params(self) -> Mapping[str, Any]:
        params = {
            "map_method": self.map_method,
            "classifier": self.classifier,
            "scales": list(self.scales),
            "data": self.data.as_dict(),
        }
        if self.prototypes is not None:
            params["prototypes"] = self.prototypes
        return params

    def reset(self, run: RunDir) -> None:
        for folder in self.folders(run).values():
            _remove_inside(run, folder)

    def run(self, run: RunDir) -> None:
        from wsss.maps.runner import run_maps
        from wsss.models import load_model
        from wsss.runtime import resolve_device

        device = resolve_device(self.device)
        dataset = self.data.build()
        checkpoint = run.checkpoint(self.classifier)
        model, _ = load_model(checkpoint, map_location=device, classes=dataset.classes)
        options = {}
        if self.prototypes is not None:
            options["prototypes"] = PrototypeStage.path(run, self.prototypes)
        run_maps(
            self.map_method,
            model,
            dataset,
            self.folders(run),
            scales=self.scales,
            device=device,
            method_options=options,
            checkpoint=checkpoint,
            progress=self.progress,
        )


class EvalStage(Stage):
    """Evaluate the seed masks of ``method`` and merge the entry into ``results.json``.

    The entry is the evaluation at the fixed ``threshold`` (with the whole sweep under
    ``sweep``) and the sweep's best threshold, chosen on the ground truth, under ``best``
    (flagged ``oracle``).

    Args:
        method: Maps to evaluate (``run.maps_dir(method)``), also the results key.
        data: The split with ground truth.
        threshold: Fixed background threshold.
        thresholds: Sweep thresholds (default 0.05 … 0.95).
        requires: Upstream stages.
        progress: Show progress bars.
    """

    def __init__(
        self,
        method: str,
        data: DataSpec,
        threshold: float = 0.3,
        thresholds: Sequence[float] | None = None,
        requires: tuple[str, ...] | None = None,
        progress: bool = True,
    ) -> None:
        self.method, self.data, self.threshold = method, data, float(threshold)
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]
        self.name = f"eval_{method}"
        self.requires = requires
        self.progress = progress

    def params(self) -> Mapping[str, Any]:
        return {
            "threshold": self.threshold,
            "thresholds": self.thresholds,
            "data": self.data.as_dict(),
        }

    def is_complete(self, run: RunDir) -> bool:
        return self.method in run.results()

    def run(self, run: RunDir) -> None:
        from wsss.evaluate import evaluate

        dataset, maps_dir = self.data.build(), run.maps_dir(self.method)
        fixed = evaluate(dataset, maps_dir=maps_dir, threshold=self.threshold, progress=False)
        best = evaluate(
            dataset,
            maps_dir=maps_dir,
            sweep=True,
            thresholds=self.thresholds,
            progress=self.progress,
        )
        fixed["sweep"] = best.pop("sweep")
        run.update_results({self.method: results_entry(fixed, best)})


class PrototypeStage(Stage):
    """Fit LPCAM prototypes of a classifier from its CAMs (``lpcam/prototypes.safetensors``).

    When the dataset has the part annotation, also writes the composition of every selected
    prototype (its share of head, body, context and background pixels,
    :mod:`wsss.diagnostics.prototypes`) to ``lpcam/composition.json``.

    Args:
        classifier: Name of the trained classifier.
        data: Clustering split.
        config: :class:`wsss.maps.lpcam.PrototypeConfig`.
        cam_method: Maps splitting foreground from context (default ``cam``).
        device: Device (``auto``: CUDA when available).
        name: Name of the prototype set (folder under the run).
        requires: Upstream stages.
        progress: Show progress bars.
    """

    def __init__(
        self,
        classifier: str,
        data: DataSpec,
        config: Any,
        cam_method: str = "cam",
        device: str = "auto",
        name: str = "lpcam",
        requires: tuple[str, ...] | None = None,
        progress: bool = True,
    ) -> None:
        self.classifier, self.data, self.config = classifier, data, config
        self.cam_method, self.device, self.set_name = cam_method, device, name
        self.name = f"{name}_fit"
        self.requires = requires
        self.progress = progress

    @staticmethod
    def path(run: RunDir, name: str = "lpcam") -> Path:
        """Prototype file of set ``name``."""
        return run.path / name / "prototypes.safetensors"

    def outputs(self, run: RunDir) -> list[Path]:
        return [self.path(run, self.set_name)]

    def params(self) -> Mapping[str, Any]:
        return {
            "classifier": self.classifier,
            "cam_method": self.cam_method,
            "data": self.data.as_dict(),
            "config": dataclasses.asdict(self.config),
        }

    def reset(self, run: RunDir) -> None:
        _remove_inside(run, run.path / self.set_name)

    def run(self, run: RunDir) -> None:
        from wsss.diagnostics.prototypes import part_tags, prototype_composition
        from wsss.io.atomic import atomic_write_json
        from wsss.maps.lpcam import fit_prototypes, save_prototypes
        from wsss.models import load_model
        from wsss.runtime import resolve_device

        device = resolve_device(self.device)
        checkpoint = run.checkpoint(self.classifier)
        model, _ = load_model(checkpoint, map_location=device)
        dataset = self.data.build()
        tags = part_tags(dataset)
        prototypes = fit_prototypes(
            model,
            dataset,
            run.maps_dir(self.cam_method),
            self.config,
            device=device,
            checkpoint=checkpoint,
            progress=self.progress,
            tags=tags,
        )
        folder = run.path / self.set_name
        atomic_write_json(folder / "composition.json", prototype_composition(prototypes))
        save_prototypes(self.path(run, self.set_name), prototypes)


class ReportStage(Stage):
    """Render ``report.html`` from ``results.json``, the maps and the run's records.

    Args:
        data: Split of the example grid.
        examples: Images in the example grid.
        threshold: Background threshold of the example seed masks.
        title: Page title.
        requires: Upstream stages (every evaluation).
    """

    name = "report"

    def __init__(
        self,
        data: DataSpec | None,
        examples: int = 8,
        threshold: float = 0.3,
        title: str | None = None,
        requires: tuple[str, ...] | None = None,
    ) -> None:
        self.data, self.examples, self.threshold, self.title = data, examples, threshold, title
        self.requires = requires

    def outputs(self, run: RunDir) -> list[Path]:
        return [run.report_path]

    def params(self) -> Mapping[str, Any]:
        return {
            "data": None if self.data is None else self.data.as_dict(),
            "examples": self.examples,
            "threshold": self.threshold,
            "title": self.title,
        }

    def run(self, run: RunDir) -> None:
        write_run_report(
            run,
            None if self.data is None else self.data.build(),
            self.examples,
            self.threshold,
            self.title,
        )


def write_run_report(
    run: RunDir,
    dataset: SegmentationDataset | None = None,
    examples: int = 8,
    threshold: float = 0.3,
    title: str | None = None,
) -> Path:
    """Render ``run``'s results, maps and records into ``report.html``; return its path.

    Args:
        run: The run directory.
        dataset: The evaluated split, for the example grids (skipped if None; see
            :func:`~wsss.pipeline.report_examples.run_example_sets`).
        examples: Images in each example grid.
        threshold: Background threshold of the example seed masks.
        title: Page title (default: the run directory's name).
    """
    from wsss.pipeline.report_examples import run_example_sets
    from wsss.report import load_metrics_records, write_report

    results = run.results()
    composition = run.path / "lpcam" / "composition.json"
    metrics = sorted(run.path.glob("train/*/metrics.jsonl"))
    artefacts = {
        p.name if p.parent == run.path else p.relative_to(run.path).as_posix(): p
        for p in [
            run.results_path,
            run.config_path,
            run.path / "run_info.json",
            run.timings_path,
            *sorted(run.path.glob("train/*")),
            *sorted(run.path.glob("maps/*")),
            *sorted(p for d in ("affinity", "rw", "segmentation") for p in run.path.glob(f"{d}/*")),
            run.logs_dir / "pipeline.log",
        ]
        if p.exists()
    }
    return write_report(
        run.report_path,
        results,
        training={p.parent.name: load_metrics_records(p) for p in metrics},
        artefacts=artefacts,
        examples=run_example_sets(run, dataset, examples, threshold),
        title=title or f"wsss run: {run.path.name}",
        timings=run.timings(),
        config=run.read_config(),
        info=run.read_info(),
        prototypes=json.loads(composition.read_text()) if composition.is_file() else None,
    )
