"""The example grids of a run's report, built from whatever the run directory holds.

Two :class:`~wsss.report.ExampleSet` s (:func:`run_example_sets`), each column left out when
its files are not in the run:

1. **The evaluated split** (the classifier's training split): the image, its ground truth,
   the heat map and seed mask of a few seed methods (``cam``, the run's other trained
   classifiers such as ``pnoc``, ``lpcam``), the saliency map (``maps/c2am_h``, else
   ``maps/c2am``), the affinity labels (``affinity/<m>``), the pseudo mask (``rw/<m>``, ``m``
   the method whose pseudo masks trained the segmentation network) and the network's
   prediction. The worst images are those of lowest per-image IoU of the pseudo masks (else
   of the last mask or seed column). The run predicts only the validation split, so the
   prediction column is made for the report: once the images are chosen, the segmentation
   checkpoint predicts them with the run's ``segmentation.infer`` scales, flip and CRF into
   ``report_files/segmentation/<split>/`` (kept for the next report while the checkpoint and
   the settings are unchanged).
2. **The segmentation split** (``segmentation/<split>``, usually ``val``): the image, its
   ground truth and the prediction; the worst images are ranked by the prediction.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from wsss.data.base import SegmentationDataset
from wsss.errors import ConfigError, DataError
from wsss.pipeline.refine_stages import affinity_dir, rw_dir
from wsss.pipeline.rundir import RunDir
from wsss.pipeline.segmentation import SegmentationStage
from wsss.report import ExampleColumn, ExampleSet, result_kind

__all__ = ["example_methods", "predict_examples", "report_files_dir", "run_example_sets"]

NETWORK = "segmentation"  # the trained segmentation network's name in the run
SALIENCY_MAPS = ("c2am_h", "c2am")  # preferred saliency maps, best first
REPORT_SCALES = (1.0,)  # inference scales without the run's segmentation settings


def report_files_dir(run: RunDir) -> Path:
    """Folder of the files made for the report (predictions of the example images)."""
    return run.path / "report_files"


def _has_files(folder: Path, suffix: str) -> bool:
    return folder.is_dir() and any(folder.glob(f"*{suffix}"))


def example_methods(run: RunDir, results: Mapping[str, Any], count: int = 3) -> list[str]:
    """Seed methods whose maps the example grid shows: ``cam``, then the run's other trained
    classifiers (``pnoc`` ...), then ``lpcam``, then the others in ``results`` order; at most
    ``count``."""
    trained = {p.name for p in run.path.glob("train/*")}
    found = [
        m
        for m, entry in results.items()
        if result_kind(m, entry) == "seeds" and _has_files(run.maps_dir(m), ".npz")
    ]

    def rank(method: str) -> int:
        if method == "cam":
            return 0
        return 1 if method in trained else 2 if method == "lpcam" else 3

    return sorted(found, key=rank)[: max(count, 0)]


def _folder_methods(run: RunDir, results: Mapping[str, Any], prefix: str, root: Path) -> list[str]:
    """Methods with a folder of masks under ``root``: ``results`` order, then by name."""
    listed = [k[len(prefix) :] for k in results if k.startswith(prefix)]
    on_disk = sorted(p.name for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    ordered = list(dict.fromkeys([*listed, *on_disk]))
    return [m for m in ordered if _has_files(root / m, ".png")]


def _training_masks(run: RunDir) -> Path | None:
    """The mask folder the segmentation network was trained on (its ``config.yaml``)."""
    path = run.train_dir(NETWORK) / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        masks = config["train"]["strategy_args"]["masks"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return Path(masks).expanduser().resolve() if masks else None


def _pseudo_column(run: RunDir, results: Mapping[str, Any]) -> tuple[ExampleColumn | None, str]:
    """The pseudo-mask column and its refined method (``""`` when none is known)."""
    methods = _folder_methods(run, results, "rw_", run.path / "rw")
    trained_on = _training_masks(run)
    if trained_on is not None and _has_files(trained_on, ".png"):
        for method in methods:
            if rw_dir(run, method).resolve() == trained_on:
                return ExampleColumn(f"pseudo mask ({method})", trained_on, "mask"), method
        return ExampleColumn(f"pseudo mask ({trained_on.name})", trained_on, "mask"), ""
    if methods:
        method = methods[0]
        return ExampleColumn(f"pseudo mask ({method})", rw_dir(run, method), "mask"), method
    return None, ""


def _infer_settings(run: RunDir) -> dict[str, Any]:
    """The run's ``segmentation.infer`` settings (scale 1 and flip when it has none)."""
    section = run.read_config().get("segmentation")
    infer = section.get("infer") if isinstance(section, Mapping) else None
    infer = infer if isinstance(infer, Mapping) else {}
    return {
        "scales": [float(s) for s in infer.get("scales") or REPORT_SCALES],
        "flip": bool(infer.get("flip", True)),
        "crf": bool(infer.get("crf", False)),
        "amp": bool(infer.get("amp", True)),
        "device": str(infer.get("device", "auto")),
    }


def predict_examples(
    run: RunDir,
    dataset: SegmentationDataset,
    ids: Sequence[str],
    out: str | os.PathLike,
    device: str | None = None,
) -> Path:
    """Predict the masks of images ``ids`` of ``dataset`` with the run's segmentation network.

    Each image goes through :func:`~wsss.maps.segmentation_infer.predict_segmentation` alone,
    as :func:`~wsss.maps.segment.segment_split` does with its default batch of one, with the
    run's ``segmentation.infer`` settings; the masks go to ``out`` (a
    :class:`~wsss.io.masks.MaskStore` recording those settings). Masks already there are
    kept unless the settings changed or the checkpoint is newer. Runs in this process only
    (no sharding, no collective), so rank 0 can call it alone under ``torchrun``.

    Args:
        run: The run (``run.checkpoint("segmentation")`` must exist).
        dataset: The split of the images.
        ids: Images to predict.
        out: Mask folder.
        device: Inference device; default the run's ``segmentation.infer.device``.

    Returns:
        ``out``.
    """
    from wsss.io.masks import MaskStore
    from wsss.maps.segmentation_infer import predict_segmentation
    from wsss.maps.tta import default_max_pixels
    from wsss.models import load_model
    from wsss.runtime import resolve_device

    settings = _infer_settings(run)
    checkpoint = run.checkpoint(NETWORK)
    store = MaskStore(out)
    if store.manifest_path.is_file() and (
        checkpoint.stat().st_mtime > store.manifest_path.stat().st_mtime
    ):
        store.clear()  # made by an earlier network
    store.claim(
        {
            "checkpoint": str(checkpoint),
            "scales": settings["scales"],
            "flip": settings["flip"],
            "crf": settings["crf"],
            "split": dataset.split,
            "classes": list(dataset.class_names),
        },
        restart=True,
    )
    pending = [i for i in ids if not store.has(i)]
    if pending:
        target = resolve_device(device or settings["device"])
        model, _ = load_model(checkpoint, map_location=target, classes=dataset.classes)
        for sample_id in pending:
            (prediction,) = predict_segmentation(
                model,
                [dataset.load_image(sample_id)],
                settings["scales"],
                flip=settings["flip"],
                crf=settings["crf"],
                device=target,
                amp=settings["amp"],
                max_pixels=default_max_pixels(target),
            )
            store.save(sample_id, prediction.mask)
    return Path(out)


def _dataset_format(run: RunDir, dataset: SegmentationDataset) -> str:
    from wsss.data.datasets import DATASETS

    for name in DATASETS.names():
        if DATASETS.get(name) is type(dataset):
            return name
    data = run.read_config().get("data")
    return str(data.get("format") or "voc") if isinstance(data, Mapping) else "voc"


def _segmentation_split(run: RunDir, results: Mapping[str, Any]) -> str | None:
    """The split the run's segmentation network predicted (``segmentation/<split>``)."""
    entry = results.get(NETWORK)
    candidates = [entry.get("split")] if isinstance(entry, Mapping) else []
    section = run.read_config().get("segmentation")
    if isinstance(section, Mapping):
        candidates.append(section.get("split"))
    root = run.path / "segmentation"
    candidates += sorted(p.name for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    for split in candidates:
        if split and _has_files(SegmentationStage.folder(run, str(split)), ".png"):
            return str(split)
    return None


def run_example_sets(
    run: RunDir,
    dataset: SegmentationDataset | None,
    examples: int = 8,
    threshold: float = 0.3,
    *,
    methods: int = 3,
    segmentation_data: SegmentationDataset | None = None,
    predict: bool = True,
    device: str | None = None,
) -> list[ExampleSet]:
    """The example sets of ``run``'s report (see the module docstring).

    Args:
        run: The run directory.
        dataset: The evaluated split (None: no example grid of it, and the segmentation
            split cannot be opened unless ``segmentation_data``).
        examples: Images per set: half spread over the split, half the worst.
        threshold: Background threshold of the seed masks.
        methods: Seed methods shown (:func:`example_methods`).
        segmentation_data: The split the segmentation network predicted; default the same
            dataset's split named by ``results.json["segmentation"]["split"]`` (or the
            configuration's ``segmentation.split``).
        predict: Predict the chosen images of ``dataset`` with the segmentation checkpoint
            (False: no prediction column in the first set).
        device: Inference device of those predictions (default: the run's setting).

    Returns:
        The sets with at least one column (the first set needs a column besides the image
        and its ground truth).
    """
    if (dataset is None and segmentation_data is None) or examples <= 0:
        return []
    results = run.results()
    worst = examples // 2
    sets: list[ExampleSet] = []
    if dataset is not None:
        columns = []
        for method in example_methods(run, results, methods):
            columns.append(ExampleColumn(f"{method} heat map", run.maps_dir(method), "heat"))
            columns.append(ExampleColumn(f"{method} seed", run.maps_dir(method), "seed", threshold))
        for name in SALIENCY_MAPS:
            if _has_files(run.maps_dir(name), ".npz"):
                columns.append(ExampleColumn(f"saliency ({name})", run.maps_dir(name), "saliency"))
                break
        pseudo, refined = _pseudo_column(run, results)
        affinity = _folder_methods(run, results, "affinity_", run.path / "affinity")
        if affinity:
            chosen = refined if refined in affinity else affinity[0]
            columns.append(
                ExampleColumn(f"affinity labels ({chosen})", affinity_dir(run, chosen), "mask")
            )
        if pseudo is not None:
            columns.append(pseudo)
        if columns:
            title = f"{dataset.split} split"
            example_set = ExampleSet(dataset, columns, title, examples - worst, worst)
            if predict and run.checkpoint(NETWORK).is_file():
                example_set = _with_predictions(run, example_set, device)
            sets.append(example_set)
    if segmentation_data is not None:
        split: str | None = segmentation_data.split
    else:
        split = _segmentation_split(run, results)
        if split is not None and dataset is not None:
            from wsss.data.datasets import build_dataset

            try:
                segmentation_data = build_dataset(
                    _dataset_format(run, dataset), dataset.root, split
                )
            except (ConfigError, DataError, OSError) as e:
                run.log(f"report: no examples of the {split} split ({e})")
    if split is not None and segmentation_data is not None:
        folder = SegmentationStage.folder(run, split)
        if _has_files(folder, ".png"):
            column = ExampleColumn("prediction", folder, "mask")
            title = f"{split} split: segmentation"
            sets.append(ExampleSet(segmentation_data, [column], title, examples - worst, worst))
    return sets


def _with_predictions(run: RunDir, example_set: ExampleSet, device: str | None) -> ExampleSet:
    """``example_set`` with a prediction column for its chosen images (unchanged, and the
    reason logged, when the network cannot predict them)."""
    from wsss.report.examples import choose_examples

    dataset = example_set.dataset
    choice = choose_examples(example_set)
    out = report_files_dir(run) / "segmentation" / dataset.split
    try:
        predict_examples(run, dataset, [*choice.fixed, *choice.worst], out, device)
    except (ConfigError, DataError) as e:
        run.log(f"report: no predictions of the {dataset.split} examples ({e})")
        return example_set
    rank = example_set.ranking_column()
    return ExampleSet(
        dataset,
        [*example_set.columns, ExampleColumn("prediction", out, "mask", required=False)],
        example_set.title,
        example_set.fixed,
        example_set.worst,
        rank_by=None if rank is None else rank.title,
        choice=choice,  # the optional column leaves it as it is: no second scan of the split
    )
