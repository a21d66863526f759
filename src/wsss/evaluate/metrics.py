"""Segmentation metrics from a confusion matrix (METHODS.md §4).

Per class ``i``, with ``T_i`` ground-truth pixels, ``P_i`` predicted pixels, ``TP_i`` pixels
both, and ``U_i = T_i + P_i − TP_i``:

- ``IoU_i = TP_i / U_i``, ``FP_i = (P_i − TP_i) / U_i``, ``FN_i = (T_i − TP_i) / U_i``
  (so ``IoU + FP + FN = 1``), ``precision_i = TP_i / P_i``, ``recall_i = TP_i / T_i``.
- mIoU is the mean IoU over **all** classes, background included; FP, FN, precision and
  recall are means over the **foreground** classes (LPCAM Table 1).

A ratio whose denominator is zero is undefined: it is NaN here and left out of the means
(``np.nanmean``, as in the reference code). A class absent from both ground truth and
prediction therefore does not count towards mIoU, which is also what torchmetrics'
``MulticlassJaccardIndex(average="macro")`` does.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["SCORE_NAMES", "class_scores", "nanmean", "summary_scores"]

SCORE_NAMES = ("iou", "fp", "fn", "precision", "recall")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    out = np.full(np.broadcast_shapes(num.shape, den.shape), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class IoU, FP, FN, precision and recall as fractions in [0, 1].

    Args:
        matrix: ``(..., N, N)`` confusion counts (rows ground truth, columns prediction);
            leading dimensions, e.g. thresholds, are kept.

    Returns:
        ``{name: (..., N) float64}`` for each of :data:`SCORE_NAMES`; NaN where undefined.
    """
    matrix = np.asarray(matrix)
    tp = np.diagonal(matrix, axis1=-2, axis2=-1)
    t = matrix.sum(-1)
    p = matrix.sum(-2)
    union = t + p - tp
    return {
        "iou": _ratio(tp, union),
        "fp": _ratio(p - tp, union),
        "fn": _ratio(t - tp, union),
        "precision": _ratio(tp, p),
        "recall": _ratio(tp, t),
    }


def nanmean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean ignoring NaN; NaN (without a warning) where every value is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def summary_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Means of :func:`class_scores`: ``miou`` over all classes, the rest over foreground.

    Returns:
        ``{"miou", "fp", "fn", "precision", "recall"}`` fractions, shape ``(...)``.
    """
    scores = class_scores(matrix)
    out = {"miou": nanmean(scores["iou"])}
    for name in ("fp", "fn", "precision", "recall"):
        out[name] = nanmean(scores[name][..., 1:])
    return out
