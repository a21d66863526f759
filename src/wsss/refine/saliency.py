"""Pseudo-saliency masks: a thresholded saliency map refined by a two-label dense CRF.

The masks that C²AM (and P-NOC's C²AM-H) hand to a saliency detector: salient where the map
is strictly above 0.2, then a dense CRF with two labels and METHODS.md §4's parameters
(label unary with ``gt_prob`` 0.7, Gaussian sxy 3 / compat 3, bilateral sxy 50 / srgb 5 /
compat 10, 10 iterations). Foreground is 255, background 0.

The reference code writes an all-background mask for images without any labelled class; that
choice belongs to the caller, which knows the labels.
"""

from __future__ import annotations

import numpy as np

from wsss.errors import ConfigError, DataError

__all__ = ["SALIENT", "pseudo_saliency"]

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
        labels = _crf_labels(image, labels, 2, crf_iterations, gt_prob)
    return (labels * SALIENT).astype(np.uint8)


def _crf_labels(
    image: np.ndarray, labels: np.ndarray, n_labels: int, iterations: int, gt_prob: float
) -> np.ndarray:
    """Dense-CRF refinement of a label map (METHODS.md §4 parameters).

    Kept private and small so that it can defer to ``wsss.refine.crf`` once that exists.
    """
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_labels
    except ImportError as e:
        raise ConfigError(
            "the dense CRF needs pydensecrf: install the 'crf' extra (pip install 'wsss[crf]'), "
            "or set the CRF iterations to 0"
        ) from e
    h, w = labels.shape
    crf = dcrf.DenseCRF2D(w, h, n_labels)
    unary = unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(image), compat=10)
    q = np.asarray(crf.inference(iterations)).reshape(n_labels, h, w)
    return q.argmax(0)
