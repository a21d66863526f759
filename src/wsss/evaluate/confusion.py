"""Streaming confusion matrix over segmentation masks."""

from __future__ import annotations

import numpy as np

from wsss.data.base import IGNORE_INDEX
from wsss.errors import DataError

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix:
    """An ``N×N`` pixel count matrix, rows = ground truth, columns = prediction.

    ``N`` counts the background, so on VOC ``N = 21``. Pixels whose ground truth is
    ``ignore_index`` are skipped. Counts are ``int64`` sums, so matrices built from disjoint
    parts of a split (e.g. in worker processes) add up exactly to the single-pass result.

    Args:
        num_classes: Number of segmentation classes N, background included.
        ignore_index: Ground-truth value that is not evaluated.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> ConfusionMatrix:
        """Add the pixels of one mask pair (any equal shapes, integer class ids).

        Raises:
            DataError: On a shape mismatch, or on ids outside ``0..N-1`` (ground truth may
                also hold ``ignore_index``).
        """
        gt = np.asarray(gt)
        pred = np.asarray(pred)
        if gt.shape != pred.shape:
            raise DataError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
        valid = gt != self.ignore_index
        g = gt[valid].astype(np.int64, copy=False)
        p = pred[valid].astype(np.int64, copy=False)
        n = self.num_classes
        _check_range(g, n, "ground truth")
        _check_range(p, n, "prediction")
        self.matrix += np.bincount(g * n + p, minlength=n * n).reshape(n, n)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the counts of ``other`` (same number of classes) in place."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.matrix += other.matrix
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        out = ConfusionMatrix(self.num_classes, self.ignore_index)
        return out.merge(self).merge(other)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return np.array_equal(self.matrix, other.matrix)

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self.matrix.sum())})"


def _check_range(values: np.ndarray, n: int, what: str) -> None:
    if values.size and (values.min() < 0 or values.max() >= n):
        bad = np.unique(values[(values < 0) | (values >= n)])[:10].tolist()
        raise DataError(f"{what} has class ids {bad} outside 0..{n - 1}")
