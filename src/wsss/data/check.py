"""Read every sample of a split and list every problem found (``wsss check-data``)."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wsss.data.base import IGNORE_INDEX, SegmentationDataset
from wsss.data.datasets import build_dataset
from wsss.errors import DataError

__all__ = ["CheckReport", "Problem", "check_data", "check_dataset", "verify_files"]


@dataclass(frozen=True)
class Problem:
    """One finding of a check.

    Attributes:
        id: Sample id, or None for a problem of the whole split.
        file: The file at fault, when known.
        message: What is wrong (it names the file).
        kind: Category, e.g. ``"missing image"`` or ``"size mismatch"``.
    """

    id: str | None
    file: str | None
    message: str
    kind: str


@dataclass
class CheckReport:
    """What ``check_dataset`` found.

    ``problems`` are errors that would stop training or evaluation; ``warnings`` are
    suspicious but readable samples (no label, labels that disagree with the mask, masks
    missing for some ids only).

    Attributes:
        split: The split checked.
        samples: Number of ids in the split.
        images_ok: Samples whose files all read without a problem.
        masks: Samples with a ground-truth mask.
        parts: Samples with a part annotation.
        class_counts: Number of images labelled with each class.
        height_range: ``(min, max)`` image height over readable images, or None.
        width_range: ``(min, max)`` image width, or None.
        problems: Errors, in sample order.
        warnings: Warnings, in sample order.
    """

    split: str
    samples: int = 0
    images_ok: int = 0
    masks: int = 0
    parts: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    height_range: tuple[int, int] | None = None
    width_range: tuple[int, int] | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found (warnings allowed)."""
        return not self.problems

    def problems_by_kind(self) -> dict[str, int]:
        """Number of problems per kind, most frequent first."""
        return dict(Counter(p.kind for p in self.problems).most_common())

    def warnings_by_kind(self) -> dict[str, int]:
        """Number of warnings per kind, most frequent first."""
        return dict(Counter(p.kind for p in self.warnings).most_common())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return {
            "split": self.split,
            "samples": self.samples,
            "images_ok": self.images_ok,
            "masks": self.masks,
            "parts": self.parts,
            "class_counts": self.class_counts,
            "height_range": self.height_range,
            "width_range": self.width_range,
            "problems_by_kind": self.problems_by_kind(),
            "warnings_by_kind": self.warnings_by_kind(),
            "problems": [vars(p) for p in self.problems],
            "warnings": [vars(p) for p in self.warnings],
        }


@dataclass
class _SampleResult:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    label: np.ndarray | None = None
    shape: tuple[int, int] | None = None
    has_mask: bool = False
    mask_absent: bool = False
    has_parts: bool = False


def _problem(sample_id: str | None, error: Exception) -> Problem:
    if isinstance(error, DataError):
        path = None if error.path is None else str(error.path)
        return Problem(sample_id, path, str(error), error.kind)
    # A checker must survive anything a damaged file can trigger, and say what it was.
    return Problem(sample_id, None, f"{type(error).__name__}: {error}", "unexpected error")


def _check_sample(dataset: SegmentationDataset, sample_id: str) -> _SampleResult:
    result = _SampleResult()

    def attempt(load, *args):
        try:
            return load(*args)
        except Exception as e:
            result.problems.append(_problem(sample_id, e))
            return None

    image = attempt(dataset.load_image, sample_id)
    label = attempt(dataset.load_label, sample_id)
    problems_before_mask = len(result.problems)
    mask = attempt(dataset.load_mask, sample_id)
    result.mask_absent = mask is None and len(result.problems) == problems_before_mask
    parts = attempt(dataset.load_parts, sample_id) if dataset.has_parts else None
    num_classes = dataset.num_classes

    def structural(kind: str, message: str) -> None:
        result.problems.append(Problem(sample_id, None, f"{sample_id!r}: {message}", kind))

    if image is not None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            structural("bad image", f"image is {image.dtype} {image.shape}, not H×W×3 uint8")
        else:
            result.shape = image.shape[:2]
    if label is not None:
        if label.shape != (num_classes,) or not np.isin(label, (0.0, 1.0)).all():
            structural("bad label", f"label vector {label.shape} is not {num_classes} 0/1 values")
        else:
            result.label = label
            if not label.any():
                result.warnings.append(
                    Problem(sample_id, None, f"{sample_id!r}: no class labelled", "no labels")
                )
    for name, annotation in (("mask", mask), ("parts", parts)):
        if annotation is None:
            continue
        if annotation.ndim != 2 or annotation.dtype != np.uint8:
            structural(f"bad {name}", f"{name} is {annotation.dtype} {annotation.shape}")
        elif result.shape is not None and annotation.shape != result.shape:
            structural("size mismatch", f"{name} {annotation.shape} ≠ image {result.shape}")
    result.has_mask = mask is not None
    result.has_parts = parts is not None
    if result.label is not None and mask is not None and mask.ndim == 2:
        _compare_label_and_mask(dataset, sample_id, result, mask)
    return result


def _compare_label_and_mask(
    dataset: SegmentationDataset, sample_id: str, result: _SampleResult, mask: np.ndarray
) -> None:
    counts = np.bincount(mask.ravel(), minlength=IGNORE_INDEX + 1)
    in_mask = counts[1 : dataset.num_classes + 1] > 0
    labelled = result.label > 0
    names = np.asarray(dataset.classes)
    unseen, unlabelled = names[labelled & ~in_mask], names[in_mask & ~labelled]
    parts = []
    if len(unseen):
        parts.append(f"labelled but absent from the mask: {', '.join(unseen)}")
    if len(unlabelled):
        parts.append(f"in the mask but not labelled: {', '.join(unlabelled)}")
    if parts:
        message = f"{sample_id!r}: " + "; ".join(parts)
        result.warnings.append(Problem(sample_id, None, message, "label/mask mismatch"))


def check_dataset(
    dataset: SegmentationDataset, workers: int = 1, progress: bool = True
) -> CheckReport:
    """Read every sample of ``dataset`` (image, label, mask, parts) and collect every problem.

    Args:
        dataset: The split to check.
        workers: Threads reading samples in parallel (image decoding releases the GIL).
        progress: Show a progress bar.

    Returns:
        The report; ``report.ok`` is False when any problem was found.
    """
    report = CheckReport(split=dataset.split, samples=len(dataset))
    if not len(dataset):
        report.problems.append(
            Problem(None, None, f"split {dataset.split!r} is empty", "empty split")
        )
        return report
    for sample_id, count in Counter(dataset.ids).items():
        if count > 1:
            message = f"{sample_id!r} is listed {count} times in split {dataset.split!r}"
            report.problems.append(Problem(sample_id, None, message, "duplicate id"))

    def check(sample_id: str) -> _SampleResult:
        return _check_sample(dataset, sample_id)

    class_counts = np.zeros(dataset.num_classes, dtype=np.int64)
    shapes, without_mask = [], []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(check, dataset.ids)
        bar = tqdm(results, total=len(dataset), desc=f"check {dataset.split}", disable=not progress)
        for sample_id, result in zip(dataset.ids, bar, strict=True):
            report.problems.extend(result.problems)
            report.warnings.extend(result.warnings)
            report.images_ok += not result.problems
            report.masks += result.has_mask
            report.parts += result.has_parts
            if result.label is not None:
                class_counts += result.label > 0
            if result.shape is not None:
                shapes.append(result.shape)
            if result.mask_absent:
                without_mask.append(sample_id)
    if 0 < report.masks < report.samples:
        for sample_id in without_mask:
            message = f"{sample_id!r}: no mask while {report.masks} other samples have one"
            report.warnings.append(Problem(sample_id, None, message, "missing mask"))
    report.class_counts = {c: int(n) for c, n in zip(dataset.classes, class_counts, strict=True)}
    if shapes:
        heights, widths = np.asarray(shapes).T
        report.height_range = (int(heights.min()), int(heights.max()))
        report.width_range = (int(widths.min()), int(widths.max()))
    return report


def verify_files(dataset: SegmentationDataset, shown: int = 5) -> None:
    """Raise one ``DataError`` when ids of ``dataset`` have no image file.

    It only looks the files up (no decoding), so training runs it before starting rather than
    failing mid-epoch; ``wsss check-data`` reads and checks everything. A reader without an
    ``image_path`` method (e.g. in memory) passes.

    Args:
        dataset: The split to verify.
        shown: How many missing ids the message lists.
    """
    image_path = getattr(dataset, "image_path", None)
    if image_path is None:
        return
    missing: list[tuple[str, DataError]] = []
    for sample_id in dataset.ids:
        try:
            path = Path(image_path(sample_id))
        except DataError as e:
            missing.append((sample_id, e))
            continue
        if not path.is_file():
            error = DataError(f"{path}: image not found", path=path, kind="missing image")
            missing.append((sample_id, error))
    if missing:
        ids = ", ".join(repr(i) for i, _ in missing[:shown])
        more = ", ..." if len(missing) > shown else ""
        first = missing[0][1]
        raise DataError(
            f"split {dataset.split!r}: {len(missing)} of {len(dataset)} ids have no image file "
            f"({ids}{more}); the first: {first} (wsss check-data lists every problem)",
            path=first.path,
            kind="missing image",
        )


def check_data(
    root: str | os.PathLike,
    format: str,
    split: str,
    workers: int = 1,
    progress: bool = True,
    **kwargs: Any,
) -> CheckReport:
    """Open a dataset split and check it; a split that cannot be opened becomes a problem.

    Args:
        root: Dataset root folder (a missing root raises ``DataError``).
        format: Dataset format (``voc``, ``coco``, ``folder``).
        split: Split name.
        workers: Reader threads.
        progress: Show a progress bar.
        **kwargs: Reader options passed to ``build_dataset``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found (--data)", path=root)
    try:
        dataset = build_dataset(format, root, split, **kwargs)
    except DataError as e:
        return CheckReport(split=split, problems=[_problem(None, e)])
    return check_dataset(dataset, workers=workers, progress=progress)
