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
    "LPCAMMapsStage",
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
    """Class maps of every image of a split into ``run.maps_dir(method)``.

    Args:
        method: Name of the maps in the run (``cam``, ``lpcam``, ``pnoc`` ...).
        classifier: Name of the trained classifier to use.
        data: The split.
        map_method: Registered map method (default: ``method``).
        scales: Test-time augmentation scales.
        device: Inference device (``auto``: CUDA when available).
        prototypes: For prototype methods, the name of the :class:`PrototypeStage` output
            (``lpcam``), loaded once and handed to the method.
        requires: Upstream stages.
        progress: Show a progress bar.
    """

    distributed = True  # run_maps shards the images by rank

    def __init__(
        self,
        method: str,
        classifier: str,
        data: DataSpec,
        map_method: str | None = None,
        scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
        device: str = "auto",
        prototypes: str | None = None,
        requires: tuple[str, ...] | None = None,
        progress: bool = True,
    ) -> None:
        self.method, self.classifier, self.data = method, classifier, data
        self.map_method = map_method or method
        self.scales = tuple(float(s) for s in scales)
        self.device, self.prototypes, self.progress = device, prototypes, progress
        self.name = f"maps_{method}"
        self.requires = requires

    def outputs(self, run: RunDir) -> list[Path]:
        from wsss.maps.runner import MANIFEST_NAME

        return [run.maps_dir(self.method) / MANIFEST_NAME]

    def params(self) -> Mapping[str, Any]:
        return {
            "map_method": self.map_method,
            "classifier": self.classifier,
            "scales": list(self.scales),
            "data": self.data.as_dict(),
        }

    def reset(self, run: RunDir) -> None:
        _remove_inside(run, run.maps_dir(self.method))

    def run(self, run: RunDir) -> None:
        from wsss.maps.runner import run_maps
        from wsss.models import load_model
        from wsss.runtime import resolve_device

        device = resolve_device(self.device)
        checkpoint = run.checkpoint(self.classifier)
        model, _ = load_model(checkpoint, map_location=device)
        options = {}
        if self.prototypes is not None:
            from wsss.maps.lpcam import load_prototypes

            options["prototypes"] = load_prototypes(PrototypeStage.path(run, self.prototypes))
        run_maps(
            self.map_method,
            model,
            self.data.build(),
            run.maps_dir(self.method),
            scales=self.scales,
            device=device,
            method_options=options,
            checkpoint=checkpoint,
            progress=self.progress,
        )


def lpcam_pair(
    model: Any,
    images: Sequence[Any],
    class_indices: Sequence[Sequence[int]],
    prototypes: Any,
    scales: Sequence[float],
    device: Any = None,
) -> list[tuple[Any, Any]]:
    """LPCAM and LPCAM-F maps of images from one multi-scale feature pass.

    The two differ only in the prototype head applied to the same features, so the heads
    are stacked: channel ``n`` is LPCAM of class ``n`` and channel ``C + n`` its LPCAM-F. The
    result equals ``lpcam_maps_batch`` with ``context=True`` and ``False`` at half the cost.

    Returns:
        Per image, ``(lpcam, lpcam_f)`` :class:`~wsss.io.maps.ClassMaps`.
    """
    import torch

    from wsss.io.maps import ClassMaps
    from wsss.maps.lpcam import lpcam_map
    from wsss.maps.tta import as_image_tensor, class_maps_by_size

    c = prototypes.num_classes
    doubled = [sorted(set(k)) + [n + c for n in sorted(set(k))] for k in class_indices]

    def features(x: Any) -> Any:
        return model(x, with_features=True).features

    def make_pass(union: list[int]) -> tuple[Any, Any]:
        # sorted union: every LPCAM channel (< C) comes before every LPCAM-F one
        with_context = prototypes.head([n for n in union if n < c], context=True)
        without = prototypes.head([n - c for n in union if n >= c], context=False)
        head = torch.cat([with_context, without]).to(device)
        return features, lambda a, b: lpcam_map(a + b, head)

    images = [as_image_tensor(im) for im in images]
    maps = class_maps_by_size(images, doubled, make_pass, scales, device=device)
    pairs = []
    for m in maps:
        f = m.keys > c
        pairs.append(
            (
                ClassMaps(keys=m.keys[~f], cam=m.cam[~f], hr=m.hr[~f]),
                ClassMaps(keys=m.keys[f] - c, cam=m.cam[f], hr=m.hr[f]),
            )
        )
    return pairs


class LPCAMMapsStage(Stage):
    """LPCAM and LPCAM-F maps into ``maps/lpcam`` and ``maps/lpcam_f`` from one feature pass.

    The backbone features dominate the cost of both methods, so computing them once halves
    it. Resumable: images whose two files exist are skipped.

    Args:
        classifier: Name of the trained classifier the prototypes were fitted on.
        data: The split.
        prototypes: Name of the :class:`PrototypeStage` output.
        scales: Test-time augmentation scales.
        device: Inference device (``auto``: CUDA when available).
        requires: Upstream stages.
        progress: Show a progress bar.
    """

    name = "maps_lpcam"
    methods = ("lpcam", "lpcam_f")

    def __init__(
        self,
        classifier: str,
        data: DataSpec,
        prototypes: str = "lpcam",
        scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
        device: str = "auto",
        requires: tuple[str, ...] | None = None,
        progress: bool = True,
    ) -> None:
        self.classifier, self.data, self.prototypes = classifier, data, prototypes
        self.scales = tuple(float(s) for s in scales)
        self.device, self.requires, self.progress = device, requires, progress

    def outputs(self, run: RunDir) -> list[Path]:
        from wsss.maps.runner import MANIFEST_NAME

        return [run.maps_dir(m) / MANIFEST_NAME for m in self.methods]

    def params(self) -> Mapping[str, Any]:
        return {
            "classifier": self.classifier,
            "prototypes": self.prototypes,
            "scales": list(self.scales),
            "data": self.data.as_dict(),
        }

    def reset(self, run: RunDir) -> None:
        for method in self.methods:
            _remove_inside(run, run.maps_dir(method))

    def run(self, run: RunDir) -> None:
        import numpy as np
        import torch
        from tqdm.auto import tqdm

        from wsss.io.atomic import atomic_write_json
        from wsss.io.maps import save_class_maps
        from wsss.maps.lpcam import load_prototypes
        from wsss.maps.runner import MANIFEST_NAME, is_complete_map_file
        from wsss.models import load_model
        from wsss.runtime import resolve_device

        device = resolve_device(self.device)
        dataset = self.data.build()
        checkpoint = run.checkpoint(self.classifier)
        model, _ = load_model(checkpoint, map_location=device, classes=dataset.classes)
        prototypes = load_prototypes(PrototypeStage.path(run, self.prototypes))
        dirs = [run.maps_dir(m) for m in self.methods]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        pending = [
            i for i in dataset.ids if not all(is_complete_map_file(d / f"{i}.npz") for d in dirs)
        ]
        with torch.inference_mode():
            for sample_id in tqdm(
                pending, desc="lpcam maps", unit="img", disable=not self.progress
            ):
                image = torch.from_numpy(dataset.load_image(sample_id)).permute(2, 0, 1)
                classes = np.flatnonzero(dataset.load_label(sample_id) >= 0.5).tolist()
                pair = lpcam_pair(model, [image], [classes], prototypes, self.scales, device)[0]
                for d, maps in zip(dirs, pair, strict=True):
                    save_class_maps(d / f"{sample_id}.npz", maps)
        for method, d in zip(self.methods, dirs, strict=True):
            manifest = {
                "method": method,
                "checkpoint": str(checkpoint),
                "scales": list(self.scales),
                "classes": "gt",
                "split": self.data.split,
                "count": len(dataset),
            }
            atomic_write_json(d / MANIFEST_NAME, manifest)


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

    Also writes the composition of every selected prototype (its share of head, body,
    context and background pixels, when the dataset has the part annotation) to
    ``lpcam/composition.json``.

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
        from wsss.io.atomic import atomic_write_json
        from wsss.maps.lpcam import fit_prototypes, prototype_composition, save_prototypes
        from wsss.models import load_model
        from wsss.runtime import resolve_device

        device = resolve_device(self.device)
        checkpoint = run.checkpoint(self.classifier)
        model, _ = load_model(checkpoint, map_location=device)
        prototypes = fit_prototypes(
            model,
            self.data.build(),
            run.maps_dir(self.cam_method),
            self.config,
            device=device,
            checkpoint=checkpoint,
            progress=self.progress,
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
        dataset: The evaluated split, for the example grid (skipped if None).
        examples: Images in the example grid.
        threshold: Background threshold of the example seed masks.
        title: Page title (default: the run directory's name).
    """
    from wsss.report import load_metrics_records, result_kind, write_report

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
            run.logs_dir / "pipeline.log",
        ]
        if p.exists()
    }
    return write_report(
        run.report_path,
        results,
        training={p.parent.name: load_metrics_records(p) for p in metrics},
        artefacts=artefacts,
        maps_dirs={m: run.maps_dir(m) for m, r in results.items() if result_kind(m, r) == "seeds"},
        dataset=dataset,
        num_examples=examples,
        threshold=threshold,
        title=title or f"wsss run: {run.path.name}",
        timings=run.timings(),
        config=run.read_config(),
        info=run.read_info(),
        prototypes=json.loads(composition.read_text()) if composition.is_file() else None,
    )
