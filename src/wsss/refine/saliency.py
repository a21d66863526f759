"""Pseudo-saliency masks: a thresholded saliency map refined by a two-label dense CRF.

The masks that C²AM (and P-NOC's C²AM-H) hand to a saliency detector: salient where the map
is strictly above 0.2, then a dense CRF with two labels and METHODS.md §4's parameters
(label unary with ``gt_prob`` 0.7, Gaussian sxy 3 / compat 3, bilateral sxy 50 / srgb 5 /
compat 10, 10 iterations). Foreground is 255, background 0.

:func:`make_pseudo_saliency` writes them for a whole split with a process pool; like the
reference it gives images without any labelled class an all-background mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np

from wsss.data.base import SegmentationDataset
from wsss.errors import ConfigError, DataError
from wsss.io.maps import MapStore
from wsss.io.masks import MaskStore
from wsss.refine.crf import crf_labels, crf_params, require_pydensecrf
from wsss.refine.folders import MaskRun, _run

__all__ = ["SALIENT", "make_pseudo_saliency", "pseudo_saliency"]

SALIENT = 255


def pseudo_saliency(
    image: np.ndarray,
    saliency: np.ndarray,
    threshold: float = 0.2,
    crf_iterations: int = 10,
    gt_prob: float = 0.7,
) -> np.ndarray:
    """Pseudo-saliency mask of one image.

    Args:
        image: ``H×W×3`` ``uint8`` RGB image.
        saliency: ``H×W`` saliency scores (e.g. a max-normalised C²AM map).
        threshold: Salient where ``saliency > threshold`` (default 0.2).
        crf_iterations: Mean-field iterations; 0 returns the thresholded map unrefined.
        gt_prob: Confidence of the label unary.

    Returns:
        ``H×W`` ``uint8`` mask, :data:`SALIENT` (255) for salient pixels, else 0.

    Raises:
        DataError: Image and map sizes differ, or the image is not ``H×W×3`` ``uint8``.
        ConfigError: ``crf_iterations > 0`` and pydensecrf is not installed.
    """
    image = np.asarray(image)
    saliency = np.asarray(saliency)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"image must be H×W×3 uint8, got {image.shape} {image.dtype}")
    if saliency.shape != image.shape[:2]:
        raise DataError(f"saliency map of size {saliency.shape} but image {image.shape[:2]}")
    if crf_iterations < 0:
        raise ConfigError(f"crf_iterations must be >= 0, got {crf_iterations}")
    labels = (saliency > threshold).astype(np.int64)
    if crf_iterations > 0:
        params = crf_params("seeds", iterations=crf_iterations, gt_prob=gt_prob)
        labels = crf_labels(image, labels, 2, params)
    return (labels * SALIENT).astype(np.uint8)


def _pseudo_saliency_job(job: tuple) -> np.ndarray:
    """One image's mask (runs in a worker process)."""
    image, saliency, threshold, iterations, gt_prob = job
    if saliency is None:  # no labelled class: all background, as the reference
        return np.zeros(image.shape[:2], np.uint8)
    return pseudo_saliency(image, saliency, threshold, iterations, gt_prob)


def make_pseudo_saliency(
    dataset: SegmentationDataset,
    saliency: MapStore,
    out: MaskStore,
    *,
    threshold: float = 0.2,
    crf_iterations: int = 10,
    gt_prob: float = 0.7,
    unlabelled: Literal["background", "keep"] = "background",
    ids: Iterable[str] | None = None,
    overwrite: bool = False,
    workers: int = 0,
) -> MaskRun:
    """Write the pseudo-saliency mask of every image of a split (palette PNGs, 255 salient).

    Images and maps are read in this process, the threshold and CRF run in ``workers``
    processes, and each mask is written atomically as soon as it is back (an interrupted run
    resumes: existing files are skipped unless ``overwrite``).

    Args:
        dataset: Images and image-level labels.
        saliency: Folder of one-channel saliency maps (``hr`` at image size).
        out: Folder of the masks.
        threshold: Salient where the map is strictly above it (0.2).
        crf_iterations: Mean-field iterations of the two-label CRF (0: none).
        gt_prob: Confidence of the label unary.
        unlabelled: ``background`` (the reference): an image without any labelled class gets
            an all-background mask without its map being read; ``keep``: treated like any
            other image (for splits without labels).
        ids: Images to do (default: all of ``dataset``).
        overwrite: Redo masks that exist.
        workers: Processes (0: this process).

    Raises:
        DataError: A saliency file is missing, damaged, has more than one channel, or is not
            at the image's size.
        ConfigError: ``crf_iterations > 0`` without the ``crf`` extra.
    """
    if unlabelled not in ("background", "keep"):
        raise ConfigError(f"unlabelled must be 'background' or 'keep', got {unlabelled!r}")
    if crf_iterations > 0:
        require_pydensecrf()  # fail before the first image, not in a worker

    def make_job(sample_id: str) -> tuple:
        image = dataset.load_image(sample_id)
        if unlabelled == "background" and not (dataset.load_label(sample_id) > 0.5).any():
            return image, None, threshold, crf_iterations, gt_prob
        path = saliency.path(sample_id)
        maps = saliency.load(sample_id)
        if maps.hr.shape[0] != 1:
            raise DataError(
                f"{path}: a saliency map has one channel, this file has {maps.hr.shape[0]}",
                path=path,
                kind="bad maps",
            )
        if maps.hr.shape[1:] != image.shape[:2]:
            raise DataError(
                f"{path}: map of size {maps.hr.shape[1:]} but the image is {image.shape[:2]}",
                path=path,
                kind="bad maps",
            )
        return image, maps.hr[0], threshold, crf_iterations, gt_prob

    todo = list(dataset.ids if ids is None else ids)
    return _run(todo, out, make_job, _pseudo_saliency_job, overwrite, workers)
