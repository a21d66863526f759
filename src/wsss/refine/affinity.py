"""Affinity labels: confident foreground / background / ignore masks that train the boundary net.

Conventional (IRN ``step/cam_to_ir_label.py``; Puzzle-CAM, LPCAM and P-NOC the same):

1. ``fg = keys[CRF(argmax[high, maps])]`` and ``bg = keys[CRF(argmax[low, maps])]`` on the
   full-resolution maps, a threshold plane in front (ties go to background), each refined
   by the label CRF (preset ``"seeds"``: gt_prob 0.7, 10 iterations);
2. label = ``fg``; 255 where ``fg`` is background; 0 where ``fg`` and ``bg`` are both
   background. (Where both give a class, ``fg``'s wins.)

Saliency-aware (P-NOC §5, ``scripts/rw/make_affinity_labels.py`` with ``--sal_dir``), in the
reference's order:

1. ``salient = CRF₂(saliency > bg_threshold)`` (two labels; P-NOC: 0.1);
2. ``fg = keys[CRF(salient · argmax[fg_threshold, maps])]`` (P-NOC: 0.4);
3. label = ``fg``; 255 where ``fg`` is background; 0 where also not salient. A pixel outside
   the salient region that the second CRF gives a class keeps it, as in the reference.

An image without foreground classes gets an all-background label map (the references skip
such images; every pixel of them is background by its image label).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from wsss.errors import ConfigError, DataError
from wsss.refine.crf import CRFParams, crf_labels, crf_params

if TYPE_CHECKING:  # the worker processes import this module: it stays free of torch
    from wsss.io.maps import ClassMaps

__all__ = [
    "AFFINITY_THRESHOLDS",
    "AffinityLabelScore",
    "affinity_labels",
    "preset_thresholds",
    "saliency_affinity_labels",
    "score_affinity_labels",
    "threshold_indices",
]

IGNORE = 255


class _Maps(NamedTuple):
    """The two fields of a :class:`~wsss.io.maps.ClassMaps` that the labels use."""

    keys: np.ndarray
    hr: np.ndarray


# (high, low) thresholds of the conventional labels (METHODS §5, §7).
AFFINITY_THRESHOLDS: dict[str, tuple[float, float]] = {
    "irn": (0.30, 0.05),
    "lpcam": (0.45, 0.25),
}


def threshold_indices(scores: np.ndarray, threshold: float) -> np.ndarray:
    """``argmax`` of ``[threshold, *scores]``: 0 = background, ``j`` = channel ``j − 1``.

    Ties go to background, so a channel needs a score strictly above ``threshold``.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 3:
        raise DataError(f"scores must be K×H×W, got shape {scores.shape}")
    plane = np.full((1, *scores.shape[1:]), threshold, dtype=np.float32)
    return np.concatenate([plane, scores]).argmax(axis=0)


def _resolve_crf(crf: CRFParams | str | None) -> CRFParams | None:
    if crf is None or isinstance(crf, CRFParams):
        return crf
    return crf_params(crf)


def _refine(image: np.ndarray, indices: np.ndarray, n: int, crf: CRFParams | None) -> np.ndarray:
    return indices if crf is None else crf_labels(image, indices, n, crf)


def _inputs(image: np.ndarray, maps: ClassMaps) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    if image.shape[:2] != maps.hr.shape[1:]:
        raise DataError(
            f"image of shape {image.shape} does not fit maps of shape {maps.hr.shape} (K×H×W)"
        )
    return image, np.concatenate([[0], maps.keys]).astype(np.int64)


def affinity_labels(
    image: np.ndarray,
    maps: ClassMaps,
    high: float = 0.30,
    low: float = 0.05,
    crf: CRFParams | str | None = "seeds",
) -> np.ndarray:
    """Conventional affinity labels of one image (see the module docstring).

    Args:
        image: RGB ``H×W×3`` ``uint8``.
        maps: The image's class maps (the full-resolution ``hr`` maps are used).
        high: Threshold of the confident foreground (IRN 0.30, LPCAM 0.45).
        low: Threshold of the confident background (IRN 0.05, LPCAM 0.25).
        crf: Label-CRF parameters or preset; None skips the CRF (not the reference).

    Returns:
        ``H×W`` ``uint8`` segmentation ids, 255 = ignore.
    """
    if not low <= high:
        raise ConfigError(f"affinity labels need low <= high, got low={low}, high={high}")
    image, keys = _inputs(image, maps)
    if len(maps.keys) == 0:
        return np.zeros(maps.hr.shape[1:], np.uint8)
    crf = _resolve_crf(crf)
    fg = keys[_refine(image, threshold_indices(maps.hr, high), len(keys), crf)]
    bg = keys[_refine(image, threshold_indices(maps.hr, low), len(keys), crf)]
    label = fg.copy()
    label[fg == 0] = IGNORE
    label[(fg == 0) & (bg == 0)] = 0
    return label.astype(np.uint8)


def saliency_affinity_labels(
    image: np.ndarray,
    maps: ClassMaps,
    saliency: np.ndarray,
    fg_threshold: float = 0.4,
    bg_threshold: float = 0.1,
    crf: CRFParams | str | None = "seeds",
) -> np.ndarray:
    """Saliency-aware affinity labels of one image (P-NOC §5; see the module docstring).

    Args:
        image: RGB ``H×W×3`` ``uint8``.
        maps: The image's class maps (``hr`` is used).
        saliency: ``H×W`` saliency in [0, 1] (e.g. a C²AM-H map).
        fg_threshold: Class-map score a class needs inside the salient region.
        bg_threshold: Saliency above which a pixel is salient.
        crf: Label-CRF parameters or preset (both CRFs); None skips them.

    Returns:
        ``H×W`` ``uint8`` segmentation ids, 255 = ignore.
    """
    image, keys = _inputs(image, maps)
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.ndim == 3 and saliency.shape[0] == 1:
        saliency = saliency[0]
    if saliency.shape != maps.hr.shape[1:]:
        raise DataError(
            f"saliency map is {saliency.shape} but the class maps are {maps.hr.shape[1:]}"
        )
    if len(maps.keys) == 0:
        return np.zeros(maps.hr.shape[1:], np.uint8)
    crf = _resolve_crf(crf)
    salient = _refine(image, (saliency > bg_threshold).astype(np.int64), 2, crf)
    fg = keys[_refine(image, salient * threshold_indices(maps.hr, fg_threshold), len(keys), crf)]
    label = fg.copy()
    label[fg == 0] = IGNORE
    label[(fg == 0) & (salient == 0)] = 0
    return label.astype(np.uint8)


@dataclass
class AffinityLabelScore:
    """Quality of affinity labels against ground truth, accumulated over images.

    Pixels whose ground truth is 255 are left out. *Precision* is the share of confident
    (non-255) label pixels that match the ground truth; ``fg_precision`` / ``bg_precision``
    the same over confident foreground / background pixels; *ignored* the share of pixels the
    labels leave out (255).
    """

    correct: int = 0
    confident: int = 0
    fg_correct: int = 0
    fg_confident: int = 0
    bg_correct: int = 0
    bg_confident: int = 0
    ignored: int = 0
    pixels: int = 0

    def update(self, labels: np.ndarray, gt: np.ndarray) -> None:
        labels, gt = np.asarray(labels), np.asarray(gt)
        if labels.shape != gt.shape:
            raise DataError(f"labels {labels.shape} and ground truth {gt.shape} differ in shape")
        valid = gt != IGNORE
        confident = valid & (labels != IGNORE)
        right = confident & (labels == gt)
        fg = confident & (labels != 0)
        bg = confident & (labels == 0)
        self.pixels += int(valid.sum())
        self.ignored += int((valid & (labels == IGNORE)).sum())
        self.confident += int(confident.sum())
        self.correct += int(right.sum())
        self.fg_confident += int(fg.sum())
        self.fg_correct += int((right & fg).sum())
        self.bg_confident += int(bg.sum())
        self.bg_correct += int((right & bg).sum())

    def summary(self) -> dict[str, float]:
        """``precision``, ``fg_precision``, ``bg_precision``, ``ignored`` (fractions in [0, 1];
        NaN when there is nothing to count) and ``pixels``."""

        def ratio(a: int, b: int) -> float:
            return a / b if b else float("nan")

        return {
            "precision": ratio(self.correct, self.confident),
            "fg_precision": ratio(self.fg_correct, self.fg_confident),
            "bg_precision": ratio(self.bg_correct, self.bg_confident),
            "ignored": ratio(self.ignored, self.pixels),
            "pixels": float(self.pixels),
        }


def score_affinity_labels(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """:meth:`AffinityLabelScore.summary` over ``(labels, ground truth)`` pairs."""
    score = AffinityLabelScore()
    for labels, gt in pairs:
        score.update(labels, gt)
    return score.summary()


def preset_thresholds(preset: str | Sequence[float]) -> tuple[float, float]:
    """``(high, low)`` of a named preset of :data:`AFFINITY_THRESHOLDS` (or the pair itself)."""
    if isinstance(preset, str):
        try:
            return AFFINITY_THRESHOLDS[preset]
        except KeyError:
            known = ", ".join(sorted(AFFINITY_THRESHOLDS))
            raise ConfigError(f"unknown affinity-label preset {preset!r}; known: {known}") from None
    high, low = preset
    return float(high), float(low)


def _affinity_job(job: tuple) -> np.ndarray:
    """One image's labels from plain arrays (runs in a worker process: keep it light)."""
    image, hr, keys, saliency, settings = job
    maps = _Maps(np.asarray(keys, np.int64), hr)
    if saliency is None:
        return affinity_labels(image, maps, settings["high"], settings["low"], settings["crf"])
    return saliency_affinity_labels(
        image, maps, saliency, settings["fg_threshold"], settings["bg_threshold"], settings["crf"]
    )
