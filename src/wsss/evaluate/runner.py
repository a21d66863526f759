"""Evaluate class maps or masks of a whole split against its ground truth."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from wsss.data.base import IGNORE_INDEX, SegmentationDataset
from wsss.data.image_io import read_mask
from wsss.errors import ConfigError, DataError
from wsss.evaluate.confusion import ConfusionMatrix
from wsss.evaluate.foreign import load_maps, maps_suffix
from wsss.evaluate.groups import ClassStats, class_group_analysis
from wsss.evaluate.metrics import SCORE_NAMES, class_scores, summary_scores
from wsss.evaluate.parts import PartCounts
from wsss.evaluate.seeds import ThresholdSweep, default_thresholds
from wsss.io.maps import MapStore, check_sample_id
from wsss.io.masks import MaskStore

__all__ = ["evaluate"]


@dataclass
class _Job:
    """Everything a (possibly remote) worker needs to evaluate a list of ids."""

    dataset: SegmentationDataset
    maps_dir: Path | None
    masks_dir: Path | None
    thresholds: np.ndarray | None
    with_parts: bool
    with_stats: bool
    ignore_as_background: bool
    maps_format: str = "wsss"
    labelled_maps: bool = True  # the maps hold a channel for every labelled class

    def prediction_path(self, sample_id: str) -> Path:
        if self.maps_dir is not None:
            return self.maps_dir / f"{check_sample_id(sample_id)}{maps_suffix(self.maps_format)}"
        assert self.masks_dir is not None
        return MaskStore(self.masks_dir).path(sample_id)


@dataclass
class _Counts:
    """Mergeable accumulators of one chunk of the split."""

    sweep: ThresholdSweep | None
    confusion: ConfusionMatrix | None
    parts: PartCounts | None
    stats: ClassStats | None

    def merge(self, other: _Counts) -> _Counts:
        for name in ("sweep", "confusion", "parts", "stats"):
            mine = getattr(self, name)
            if mine is not None:
                mine.merge(getattr(other, name))
        return self


def _new_counts(job: _Job) -> _Counts:
    n = job.dataset.num_classes + 1
    return _Counts(
        sweep=ThresholdSweep(n, job.thresholds) if job.maps_dir is not None else None,
        confusion=ConfusionMatrix(n) if job.masks_dir is not None else None,
        parts=PartCounts() if job.with_parts and job.masks_dir is not None else None,
        stats=ClassStats(job.dataset.num_classes) if job.with_stats else None,
    )


def _count_one(job: _Job, counts: _Counts, sample_id: str) -> None:
    dataset = job.dataset
    gt = dataset.load_mask(sample_id)
    if gt is None:
        raise DataError(
            f"{dataset.root}: no ground-truth mask for {sample_id!r} ({dataset.split})",
            path=dataset.root,
            kind="missing mask",
        )
    parts = dataset.load_parts(sample_id) if job.with_parts else None
    if job.with_parts and parts is None:
        raise DataError(
            f"{dataset.root}: no part annotation for {sample_id!r} ({dataset.split})",
            path=dataset.root,
            kind="missing parts",
        )
    path = job.prediction_path(sample_id)
    try:
        if counts.sweep is not None:
            labelled = np.flatnonzero(dataset.load_label(sample_id) >= 0.5) + 1
            expected = labelled if job.labelled_maps else None
            maps = load_maps(path, job.maps_format, expected_keys=expected)
            if maps.keys.size and (maps.keys.min() < 1 or maps.keys.max() > dataset.num_classes):
                raise DataError(
                    f"class keys {maps.keys.tolist()} outside 1..{dataset.num_classes} "
                    f"(the dataset's classes)",
                    kind="bad maps",
                )
            counts.sweep.update(gt, maps, parts)
        else:
            pred = read_mask(path, num_classes=dataset.num_classes, palette=dataset.palette)
            if pred.shape != gt.shape:
                raise DataError(f"prediction of size {pred.shape} but ground truth {gt.shape}")
            # 255 where the ground truth is ignored is harmless (e.g. ground truth as prediction)
            unlabelled = (pred == IGNORE_INDEX) & (gt != IGNORE_INDEX)
            if unlabelled.any() and not job.ignore_as_background:
                raise DataError(
                    f"prediction has {int(unlabelled.sum())} pixels of 255 (ignore) where the "
                    "ground truth is labelled; pass ignore_as_background=True "
                    "(--ignore-as-background) to count them as background"
                )
            pred = np.where(pred == IGNORE_INDEX, 0, pred)
            counts.confusion.update(gt, pred)
            if counts.parts is not None:
                counts.parts.update(parts, gt, pred)
    except DataError as e:
        if str(path) in str(e):
            raise
        raise DataError(f"{path}: {e}", path=path, kind=getattr(e, "kind", "bad data")) from e
    if counts.stats is not None:
        counts.stats.update(dataset.load_label(sample_id), gt)


def _count_chunk(job: _Job, ids: Sequence[str]) -> _Counts:
    counts = _new_counts(job)
    for sample_id in ids:
        _count_one(job, counts, sample_id)
    return counts


def _accumulate(job: _Job, ids: list[str], num_workers: int, progress: bool) -> _Counts:
    bar = tqdm(total=len(ids), desc="evaluate", unit="img", disable=not progress)
    with bar:
        if num_workers <= 0:
            counts = _new_counts(job)
            for sample_id in ids:
                _count_one(job, counts, sample_id)
                bar.update()
            return counts
        size = max(1, min(64, math.ceil(len(ids) / (4 * num_workers))))
        chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
        counts = _new_counts(job)
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            futures = {pool.submit(_count_chunk, job, chunk): len(chunk) for chunk in chunks}
            for future in as_completed(futures):
                counts.merge(future.result())
                bar.update(futures[future])
        return counts


def _percent(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else 100.0 * value


def _scores(matrix: np.ndarray, parts: PartCounts | None) -> dict[str, float | None]:
    out = {name: _percent(v) for name, v in summary_scores(matrix).items()}
    if parts is not None:
        out.update({name: _percent(v) for name, v in parts.metrics().items()})
    return out


def _entry(
    dataset: SegmentationDataset,
    matrix: np.ndarray,
    parts: PartCounts | None,
    threshold: float | None,
    oracle: bool,
) -> dict[str, Any]:
    """Threshold, oracle flag, summary scores and per-class scores of one confusion matrix."""
    per_class = class_scores(matrix)
    return {
        "threshold": threshold,
        "oracle": oracle,
        **_scores(matrix, parts),
        "per_class": {
            name: {key: _percent(per_class[key][i]) for key in SCORE_NAMES}
            for i, name in enumerate(dataset.class_names)
        },
    }


def evaluate(
    dataset: SegmentationDataset,
    maps_dir: str | os.PathLike | None = None,
    masks_dir: str | os.PathLike | None = None,
    threshold: float = 0.3,
    sweep: bool = False,
    thresholds: Sequence[float] | None = None,
    num_workers: int = 0,
    groups: bool | Mapping[str, Sequence[str]] = False,
    ignore_as_background: bool = False,
    progress: bool = True,
    maps_format: str = "wsss",
) -> dict[str, Any]:
    """Evaluate the predictions for every image of ``dataset`` against its ground truth.

    Predictions are either class-map files ``<maps_dir>/<id>.npz`` turned into seed masks with
    a background threshold, or masks ``<masks_dir>/<id>.png`` (palette/gray indices or RGB
    VOC colours). mIoU averages all classes including background; FP, FN, precision and
    recall average the foreground classes; undefined ratios (zero denominators) are ``None``
    and left out of the means (see :mod:`wsss.evaluate.metrics`).

    Args:
        dataset: Split with ground-truth masks.
        maps_dir: Folder of class-map files (exclusive with ``masks_dir``).
        masks_dir: Folder of predicted masks.
        threshold: Background threshold for class maps (the honest, fixed mode). With
            ``sweep`` its result is reported too, under ``fixed``.
        sweep: Evaluate every threshold of ``thresholds`` and report the best one, flagged
            ``"oracle": True`` since it is chosen on the ground truth.
        thresholds: Sweep grid (with ``sweep=True``); default
            :func:`~wsss.evaluate.seeds.default_thresholds`, 0.05…0.80 step 0.05 like the
            P-NOC code, so that oracle numbers compare with the papers'.
        num_workers: Worker processes (0: evaluate in this process).
        groups: Add the class-group analysis; a mapping adds user groups (name → classes).
        ignore_as_background: Count 255 in predicted masks as background instead of failing.
        progress: Show a progress bar.
        maps_format: Format of the class-map files: ``wsss`` (``<id>.npz``), or the
            ``<id>.npy`` of the reference code, ``irn`` (IRN, LPCAM) or ``puzzle``
            (Puzzle-CAM, P-NOC); see :mod:`wsss.evaluate.foreign`.

    Returns:
        A JSON-ready dict, percentages in 0–100: ``split``, ``source``, ``num_images``,
        ``threshold``, ``oracle``, ``miou``, ``fp``, ``fn``, ``precision``, ``recall``,
        ``per_class`` ({name: {iou, fp, fn, precision, recall}}), the part diagnostics when
        the dataset has them, ``groups`` when asked. With ``sweep=True`` the top level is the
        oracle (best) threshold's result, plus ``thresholds`` (the grid), ``sweep`` (one
        entry per grid threshold) and ``fixed`` (the result at ``threshold``: ``threshold``,
        ``oracle`` False, the scores and ``per_class``).

    Raises:
        ConfigError: Bad combination of options.
        DataError: Missing or malformed prediction or ground truth, naming the file.
    """
    if (maps_dir is None) == (masks_dir is None):
        raise ConfigError("give exactly one of maps_dir (class maps) and masks_dir (masks)")
    maps_suffix(maps_format)
    if masks_dir is not None and (sweep or thresholds is not None):
        raise ConfigError("a threshold sweep needs class maps (maps_dir), not masks")
    if thresholds is not None and not sweep:
        raise ConfigError("thresholds lists the sweep's values: pass sweep=True with it")
    if sweep:
        grid = default_thresholds() if thresholds is None else np.asarray(thresholds, float)
        grid = grid.reshape(-1)
    else:
        grid = np.zeros(0)
    if maps_dir is not None and (
        (sweep and grid.size == 0) or not np.isfinite([*grid, threshold]).all()
    ):
        raise ConfigError(f"thresholds must be finite numbers, got {[*grid.tolist(), threshold]}")
    grid = np.unique(grid)
    source_dir = Path(maps_dir if maps_dir is not None else masks_dir)
    if not source_dir.is_dir():
        raise DataError(f"{source_dir}: prediction folder not found", path=source_dir)
    if isinstance(groups, Mapping):
        unknown = sorted({c for members in groups.values() for c in members} - set(dataset.classes))
        if unknown:
            raise ConfigError(f"class groups name classes not in the dataset: {unknown}")
    ids = list(dataset.ids)
    if not ids:
        raise DataError(f"{dataset.root}: split {dataset.split!r} is empty")

    job = _Job(
        dataset=dataset,
        maps_dir=Path(maps_dir) if maps_dir is not None else None,
        masks_dir=Path(masks_dir) if masks_dir is not None else None,
        thresholds=np.unique([*grid, threshold]) if maps_dir is not None else None,
        with_parts=dataset.has_parts,
        with_stats=bool(groups),
        ignore_as_background=ignore_as_background,
        maps_format=maps_format,
    )
    if maps_dir is not None:
        # Maps of the classes a model predicted need not cover every labelled class.
        record = MapStore(maps_dir).manifest() or {}
        job.labelled_maps = record.get("classes", "gt") != "predicted"
    missing = [p for p in map(job.prediction_path, ids) if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(
            f"{len(missing)} prediction file(s) missing: {shown}{more}",
            path=missing[0],
            kind="missing prediction",
        )

    counts = _accumulate(job, ids, num_workers, progress)

    header = {
        "split": dataset.split,
        "source": {"type": "maps" if maps_dir is not None else "masks", "path": str(source_dir)},
        "num_images": len(ids),
    }
    if counts.sweep is None:
        result = {**header, **_entry(dataset, counts.confusion.matrix, counts.parts, None, False)}
        matrix = counts.confusion.matrix
    else:
        evaluated = counts.sweep.thresholds
        matrices = counts.sweep.matrices()
        parts = counts.sweep.part_counts() if job.with_parts else [None] * len(matrices)
        fixed_index = int(np.searchsorted(evaluated, threshold))
        fixed = _entry(dataset, matrices[fixed_index], parts[fixed_index], float(threshold), False)
        if not sweep:
            result = {**header, **fixed}
            matrix = matrices[fixed_index]
        else:
            indices = np.searchsorted(evaluated, grid)
            rows = [
                {"threshold": float(evaluated[i]), **_scores(matrices[i], parts[i])}
                for i in indices
            ]
            miou = np.array([np.nan if r["miou"] is None else r["miou"] for r in rows])
            best = int(indices[np.nanargmax(miou) if np.isfinite(miou).any() else 0])
            matrix = matrices[best]
            result = {
                **header,
                **_entry(dataset, matrix, parts[best], float(evaluated[best]), True),
                "thresholds": grid.tolist(),
                "sweep": rows,
                "fixed": fixed,
            }
    if groups:
        user_groups = groups if isinstance(groups, Mapping) else None
        iou = 100.0 * class_scores(matrix)["iou"][1:]
        analysis = class_group_analysis(counts.stats, iou, dataset.classes, user_groups)
        result["groups"] = _json_ready(analysis)
    return result


def _json_ready(obj: Any) -> Any:
    """Replace NaN by None recursively (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
