"""Folder-level refinement: a map folder and a dataset in, a folder of palette PNGs out.

:func:`make_pseudo_masks` and :func:`make_affinity_labels` read each image, its image-level
label and its maps in this process, compute in ``workers`` processes (the CRF dominates the
cost), and write each result atomically as soon as it is back, so an interrupted run resumes
where it stopped (existing files are skipped unless ``overwrite``). Images without a
foreground label get an all-background mask without their maps being read; channels of classes
outside an image's label are dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsss.data.base import SegmentationDataset
from wsss.errors import DataError
from wsss.io.maps import MapStore
from wsss.io.masks import MaskStore
from wsss.refine.affinity import (
    AffinityLabelScore,
    _affinity_job,
    _resolve_crf,
    preset_thresholds,
)
from wsss.refine.crf import CRFParams, crf_params, map_in_processes
from wsss.refine.pseudo_masks import _mask_job, label_keys, saliency_background

__all__ = ["MaskRun", "evaluate_affinity_labels", "make_affinity_labels", "make_pseudo_masks"]


@dataclass
class MaskRun:
    """What a folder run did: ``written`` files, ``skipped`` existing ones."""

    written: int = 0
    skipped: int = 0


def _labelled_maps(
    dataset: SegmentationDataset, maps: MapStore, sample_id: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, hr, keys)`` with only the labelled classes' channels."""
    image = dataset.load_image(sample_id)
    keys = label_keys(dataset.load_label(sample_id))
    if len(keys) == 0:
        return image, np.zeros((0, *image.shape[:2]), np.float32), keys
    m = maps.load(sample_id, expected_keys=keys)
    keep = np.isin(m.keys, keys)
    if m.hr.shape[1:] != image.shape[:2]:
        raise DataError(
            f"{maps.path(sample_id)}: maps are {m.hr.shape[1]}×{m.hr.shape[2]} but the image "
            f"is {image.shape[0]}×{image.shape[1]}",
            path=maps.path(sample_id),
        )
    return image, m.hr[keep], m.keys[keep]


def _run(
    todo: Sequence[str],
    out: MaskStore,
    make_job: Callable[[str], Any],
    job_fn: Callable[[Any], np.ndarray],
    overwrite: bool,
    workers: int,
) -> MaskRun:
    run = MaskRun()
    pending: deque[str] = deque()  # ids in the order their jobs went out

    def jobs() -> Iterator[Any]:
        for sample_id in todo:
            if not overwrite and out.has(sample_id):
                run.skipped += 1
                continue
            job = make_job(sample_id)
            pending.append(sample_id)
            yield job

    for result in map_in_processes(job_fn, jobs(), workers):
        out.save(pending.popleft(), result)
        run.written += 1
    return run


def make_pseudo_masks(
    dataset: SegmentationDataset,
    maps: MapStore,
    out: MaskStore,
    *,
    background: float | MapStore = 0.25,
    saliency_threshold: float | None = None,
    crf: CRFParams | str | None = None,
    ids: Iterable[str] | None = None,
    overwrite: bool = False,
    workers: int = 0,
) -> MaskRun:
    """Write a pseudo mask (:func:`~wsss.refine.pseudo_masks.pseudo_mask`) per image.

    Args:
        dataset: Images and image-level labels.
        maps: Folder of class maps (``hr`` is used): seeds, random-walk maps, ...
        out: Folder of the masks.
        background: A constant background score (a threshold: IRN 0.25 after the random
            walk), or a folder of saliency maps (background ``1 − saliency``).
        saliency_threshold: With saliency, the 0/1 background ``saliency < threshold``.
        crf: Label-CRF parameters or preset (P-NOC after the walk: ``"rw"``), or None.
        ids: Images to do (default: all of ``dataset``).
        overwrite: Redo masks that exist.
        workers: Processes (0: this process).

    Raises:
        DataError: A map file is missing, damaged, or lacks a labelled class.
    """
    params = crf_params(crf) if isinstance(crf, str) else crf

    def make_job(sample_id: str) -> tuple:
        image, hr, keys = _labelled_maps(dataset, maps, sample_id)
        bg: float | np.ndarray = 0.0
        if len(keys) and isinstance(background, MapStore):
            bg = saliency_background(background.load(sample_id).hr, saliency_threshold)
        elif len(keys):
            bg = float(background)
        return hr, keys, bg, image if params is not None else None, params

    todo = list(dataset.ids if ids is None else ids)
    return _run(todo, out, make_job, _mask_job, overwrite, workers)


def make_affinity_labels(
    dataset: SegmentationDataset,
    maps: MapStore,
    out: MaskStore,
    *,
    thresholds: str | Sequence[float] = "irn",
    saliency: MapStore | None = None,
    fg_threshold: float = 0.4,
    bg_threshold: float = 0.1,
    crf: CRFParams | str | None = "seeds",
    ids: Iterable[str] | None = None,
    overwrite: bool = False,
    workers: int = 0,
) -> MaskRun:
    """Write affinity labels (palette PNGs, 255 = ignore) per image.

    Args:
        dataset: Images and image-level labels.
        maps: Folder of class maps (any method: CAM, LPCAM, ...).
        out: Folder of the label PNGs.
        thresholds: ``(high, low)`` or a preset of
            :data:`~wsss.refine.affinity.AFFINITY_THRESHOLDS` (conventional labels).
        saliency: Folder of saliency maps: saliency-aware labels (P-NOC §5) instead.
        fg_threshold, bg_threshold: Of the saliency-aware labels (P-NOC: 0.4, 0.1).
        crf: Label-CRF parameters or preset; None skips it (not the reference).
        ids: Images to do (default: all).
        overwrite: Redo existing files.
        workers: Processes (0: this process).
    """
    high, low = preset_thresholds(thresholds)
    settings = {
        "high": high,
        "low": low,
        "fg_threshold": fg_threshold,
        "bg_threshold": bg_threshold,
        "crf": _resolve_crf(crf),
    }

    def make_job(sample_id: str) -> tuple:
        image, hr, keys = _labelled_maps(dataset, maps, sample_id)
        sal = None if saliency is None else saliency.load(sample_id).hr
        return image, hr, keys, sal, settings

    todo = list(dataset.ids if ids is None else ids)
    return _run(todo, out, make_job, _affinity_job, overwrite, workers)


def evaluate_affinity_labels(
    dataset: SegmentationDataset, labels: MaskStore, ids: Iterable[str] | None = None
) -> dict[str, float]:
    """:class:`~wsss.refine.affinity.AffinityLabelScore` of a label folder against the ground
    truth (precision of the confident pixels, share of ignored pixels).

    Raises:
        DataError: An image has no ground-truth mask, or its label file is missing.
    """
    score = AffinityLabelScore()
    for sample_id in dataset.ids if ids is None else ids:
        gt = dataset.load_mask(sample_id)
        if gt is None:
            raise DataError(f"no ground-truth mask for {sample_id!r}: cannot score its labels")
        score.update(labels.load(sample_id), gt)
    return score.summary()
