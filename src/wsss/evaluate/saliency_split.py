"""Evaluate saliency maps of a whole split, and seed masks whose background is saliency.

:func:`evaluate_saliency` reads a folder of one-channel saliency maps (``<id>.npz``, key 0 or
any single channel) and scores them with :class:`~wsss.evaluate.saliency.SaliencySweep`:
the ``binary`` protocol (background vs any class) or P-NOC's Table 6 ``priors`` protocol
(ground-truth classes as segmentation priors), at a fixed threshold and over a sweep whose
best row is labelled oracle.

:func:`evaluate_saliency_seeds` turns class maps into seed masks whose background plane comes
from the saliency maps (:func:`~wsss.evaluate.saliency.saliency_seed_mask`: ``1 − saliency``,
or ``saliency < t`` as 0/1) instead of a constant threshold, and reports the usual seed
metrics (mIoU over all classes, FP, FN, precision, recall, per class).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from wsss.data.base import SegmentationDataset
from wsss.errors import ConfigError, DataError
from wsss.evaluate.confusion import ConfusionMatrix
from wsss.evaluate.runner import _entry
from wsss.evaluate.saliency import (
    PROTOCOLS,
    SaliencySweep,
    saliency_array,
    saliency_seed_mask,
)
from wsss.io.maps import MapStore

__all__ = ["evaluate_saliency", "evaluate_saliency_seeds"]


def _store(folder: str | os.PathLike, what: str, dataset: SegmentationDataset) -> MapStore:
    store = MapStore(folder)
    if not store.root.is_dir():
        raise DataError(f"{store.root}: {what} folder not found", path=store.root)
    present = set(store.ids())
    missing = [i for i in dataset.ids if i not in present]
    if missing:
        raise DataError(
            f"{store.root}: {len(missing)} of the {len(dataset)} images of split "
            f"{dataset.split!r} have no {what} file (e.g. {', '.join(missing[:3])})",
            path=store.root,
            kind="missing prediction",
        )
    if not dataset.ids:
        raise DataError(f"{dataset.root}: split {dataset.split!r} is empty")
    return store


def _gt(dataset: SegmentationDataset, sample_id: str) -> np.ndarray:
    gt = dataset.load_mask(sample_id)
    if gt is None:
        raise DataError(
            f"{dataset.root}: no ground-truth mask for {sample_id!r} ({dataset.split})",
            path=dataset.root,
            kind="missing mask",
        )
    return gt


def _saliency(store: MapStore, sample_id: str, shape: tuple[int, ...]) -> np.ndarray:
    path = store.path(sample_id)
    try:
        sal = saliency_array(store.load(sample_id))
    except DataError as e:
        if str(path) in str(e):
            raise
        raise DataError(f"{path}: {e}", path=path, kind="bad maps") from e
    if sal.shape != tuple(shape):
        raise DataError(
            f"{path}: saliency map of size {sal.shape} but the ground truth is {tuple(shape)}",
            path=path,
            kind="bad maps",
        )
    return sal


def evaluate_saliency(
    dataset: SegmentationDataset,
    saliency_dir: str | os.PathLike,
    protocol: str = "binary",
    threshold: float = 0.2,
    thresholds: Sequence[float] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Saliency mIoU, precision and recall of a folder of saliency maps on a split.

    Args:
        dataset: Split with ground-truth masks.
        saliency_dir: Folder of one-channel maps ``<id>.npz`` (full resolution used).
        protocol: ``binary`` or ``priors`` (P-NOC Table 6; see :mod:`wsss.evaluate.saliency`).
        threshold: The fixed (honest) threshold; salient strictly above it.
        thresholds: Sweep grid; default 0.05 … 0.95 step 0.05.
        seed: Seed of the random classes of the ``priors`` protocol.
        progress: Show a progress bar.

    Returns:
        JSON-ready, percent: ``split``, ``source``, ``num_images``, ``protocol``,
        ``threshold``, ``miou``, ``precision``, ``recall`` (at the fixed threshold),
        ``best`` (the oracle row: ``threshold``, the scores, ``"oracle": True``) and
        ``sweep`` (one row per threshold).

    Raises:
        ConfigError: Unknown protocol, bad thresholds.
        DataError: Missing or malformed map or ground truth, naming the file.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"saliency protocol must be one of {PROTOCOLS}, got {protocol!r}")
    try:
        sweep = SaliencySweep(
            protocol,
            num_classes=dataset.num_classes + 1,
            threshold=threshold,
            thresholds=thresholds,
            seed=seed,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    store = _store(saliency_dir, "saliency map", dataset)
    for sample_id in tqdm(dataset.ids, desc="saliency", unit="img", disable=not progress):
        gt = _gt(dataset, sample_id)
        sweep.update(gt, _saliency(store, sample_id, gt.shape), key=sample_id)
    return {
        "split": dataset.split,
        "source": {"type": "saliency", "path": str(Path(saliency_dir))},
        "num_images": len(dataset),
        **sweep.results(),
    }


def evaluate_saliency_seeds(
    dataset: SegmentationDataset,
    maps_dir: str | os.PathLike,
    saliency_dir: str | os.PathLike,
    saliency_threshold: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Seed masks of class maps with a saliency background, scored like ``wsss eval``.

    Args:
        dataset: Split with ground-truth masks and image labels.
        maps_dir: Folder of class maps (a channel for every labelled class).
        saliency_dir: Folder of one-channel saliency maps of the same images.
        saliency_threshold: None (default): background ``1 − saliency``; a value: background
            1 where ``saliency < value``, else 0.

    Returns:
        JSON-ready, percent: ``split``, ``source`` (both folders), ``num_images``,
        ``background`` (``"1 - saliency"`` or ``"saliency < t"``), ``saliency_threshold``,
        ``threshold`` (None: no constant background), ``oracle`` (False), ``miou``, ``fp``,
        ``fn``, ``precision``, ``recall`` and ``per_class``.

    Raises:
        DataError: Missing or malformed files, naming them.
    """
    if saliency_threshold is not None and not 0 <= saliency_threshold <= 1:
        raise ConfigError(f"saliency threshold must be in [0, 1], got {saliency_threshold}")
    maps = _store(maps_dir, "class-map", dataset)
    saliency = _store(saliency_dir, "saliency map", dataset)
    confusion = ConfusionMatrix(dataset.num_classes + 1)
    for sample_id in tqdm(dataset.ids, desc="seeds", unit="img", disable=not progress):
        gt = _gt(dataset, sample_id)
        labelled = np.flatnonzero(dataset.load_label(sample_id) >= 0.5) + 1
        class_maps = maps.load(sample_id, expected_keys=labelled)
        keep = np.isin(class_maps.keys, labelled)
        class_maps.keys, class_maps.hr = class_maps.keys[keep], class_maps.hr[keep]
        sal = _saliency(saliency, sample_id, gt.shape)
        if class_maps.hr.shape[1:] != gt.shape:
            path = maps.path(sample_id)
            raise DataError(
                f"{path}: maps of size {class_maps.hr.shape[1:]} but the ground truth is "
                f"{gt.shape}",
                path=path,
            )
        confusion.update(gt, saliency_seed_mask(class_maps, sal, saliency_threshold))
    background = "1 - saliency" if saliency_threshold is None else "saliency < t"
    return {
        "split": dataset.split,
        "source": {"type": "maps", "path": str(Path(maps_dir)), "saliency": str(saliency_dir)},
        "num_images": len(dataset),
        "background": background,
        "saliency_threshold": saliency_threshold,
        **_entry(dataset, confusion.matrix, None, None, False),
    }
