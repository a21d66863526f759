"""Pseudo masks: from refined class maps to one palette PNG per image.

A mask is the ``argmax`` of ``[background, *maps]`` (ties to background), optionally refined
by the label CRF, mapped to segmentation ids; 255 marks pixels a method chooses to ignore.
The background is a constant plane (a threshold: IRN 0.25, P-NOC 0.30, LPCAM 0.35 after the
random walk) or comes from a saliency map (``1 − saliency``, or ``saliency < t`` as 0/1, as
P-NOC's evaluation does). An image without a foreground label is all background.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wsss.errors import DataError
from wsss.refine.crf import CRFParams, crf_labels, crf_params

__all__ = [
    "label_keys",
    "pseudo_mask",
    "saliency_background",
]

IGNORE = 255


def label_keys(label: np.ndarray) -> np.ndarray:
    """Segmentation ids (1..C) of the classes present in an image-level label vector."""
    return np.flatnonzero(np.asarray(label) > 0.5).astype(np.int64) + 1


def saliency_background(saliency: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Background scores from an ``H×W`` saliency map: ``1 − saliency``, or with ``threshold``
    the 0/1 plane ``saliency < threshold`` (P-NOC ``scripts/evaluate.py``)."""
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.ndim == 3 and saliency.shape[0] == 1:
        saliency = saliency[0]
    if saliency.ndim != 2:
        raise DataError(f"saliency must be an H×W map, got shape {saliency.shape}")
    if threshold is None:
        return 1.0 - saliency
    return (saliency < threshold).astype(np.float32)


def pseudo_mask(
    scores: np.ndarray,
    keys: Sequence[int] | np.ndarray,
    background: float | np.ndarray,
    *,
    image: np.ndarray | None = None,
    crf: CRFParams | str | None = None,
    ignore: np.ndarray | None = None,
) -> np.ndarray:
    """One image's pseudo mask.

    Args:
        scores: ``K×H×W`` class scores (e.g. random-walk maps), channel ``j`` of class
            ``keys[j]``.
        keys: Segmentation ids of the channels.
        background: A constant background score or an ``H×W`` background plane.
        image: RGB ``H×W×3`` ``uint8``, needed by the CRF.
        crf: Label-CRF parameters or preset (e.g. ``"rw"``: P-NOC's 1 iteration, gt_prob
            0.9); None for no CRF.
        ignore: ``H×W`` bool: pixels set to 255 at the end.

    Returns:
        ``H×W`` ``uint8`` segmentation ids.
    """
    scores = np.asarray(scores, dtype=np.float32)
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if scores.ndim != 3 or len(keys) != scores.shape[0]:
        raise DataError(f"scores must be K×H×W with K = {len(keys)} keys, got {scores.shape}")
    shape = scores.shape[1:]
    if np.ndim(background) == 0:
        plane = np.full((1, *shape), float(background), np.float32)
    else:
        plane = np.asarray(background, dtype=np.float32)
        if plane.shape != shape:
            raise DataError(f"background plane is {plane.shape} but the maps are {shape}")
        plane = plane[None]
    if len(keys) == 0:
        indices = np.zeros(shape, np.int64)
    else:
        indices = np.concatenate([plane, scores]).argmax(axis=0)
        if crf is not None:
            if image is None:
                raise DataError("the CRF needs the image")
            params = crf_params(crf) if isinstance(crf, str) else crf
            indices = crf_labels(image, indices, len(keys) + 1, params)
    mask = np.concatenate([[0], keys])[indices].astype(np.uint8)
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != shape:
            raise DataError(f"ignore mask is {ignore.shape} but the maps are {shape}")
        mask[ignore] = IGNORE
    return mask


def _mask_job(job: tuple) -> np.ndarray:
    """One image's mask (runs in a worker process: this module stays free of torch)."""
    scores, keys, background, image, crf = job
    return pseudo_mask(scores, keys, background, image=image, crf=crf)
