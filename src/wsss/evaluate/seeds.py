"""Seed masks from class maps, and a fast evaluation over many background thresholds.

A seed mask stacks a constant background plane ``t`` in front of the class maps and takes
the argmax; ties go to the background, so a class needs a score strictly above ``t``. Like
the reference code, ``t`` is compared in the maps' precision (``float32``).
"""

from __future__ import annotations

import math

import numpy as np

from wsss.data.base import IGNORE_INDEX
from wsss.errors import ConfigError, DataError
from wsss.evaluate.confusion import ConfusionMatrix
from wsss.evaluate.parts import CORRECT, FOREGROUND, NUM_PARTS, TOTAL, PartCounts
from wsss.io.maps import ClassMaps

__all__ = [
    "ThresholdSweep",
    "default_thresholds",
    "format_thresholds",
    "parse_thresholds",
    "seed_mask",
]


def default_thresholds() -> np.ndarray:
    """Background thresholds 0.05, 0.10, …, 0.80: the P-NOC code's sweep.

    Oracle numbers are comparable with the papers' only on this grid. Prototype maps (LPCAM)
    can peak higher; widen the grid explicitly (e.g. ``parse_thresholds("0.05:0.95:0.05")``)
    and say so when reporting.
    """
    return np.round(np.arange(0.05, 0.801, 0.05), 2)


def parse_thresholds(text: str) -> np.ndarray:
    """A threshold grid from ``START:STOP:STEP`` (both ends included) or a comma list.

    ``"0.05:0.80:0.05"`` gives 0.05, 0.10, …, 0.80; ``"0.2,0.3,0.5"`` those three values.

    Raises:
        ConfigError: The text is neither form, or the range is empty.
    """
    hint = "expected START:STOP:STEP (e.g. 0.05:0.80:0.05) or a comma list (e.g. 0.2,0.3,0.5)"
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if not step > 0 or stop < start:
                raise ValueError
            count = math.floor((stop - start) / step + 1e-9) + 1
            grid = np.round(start + step * np.arange(count), 10)
        else:
            grid = np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise ConfigError(f"thresholds {text!r}: {hint}") from None
    if grid.size == 0 or not np.isfinite(grid).all():
        raise ConfigError(f"thresholds {text!r}: {hint}")
    return grid


def format_thresholds(grid: np.ndarray | list[float]) -> str:
    """``START:STOP:STEP`` for an evenly spaced grid of 3 or more values, else a comma list."""
    t = np.asarray(grid, dtype=np.float64)

    def num(v: float) -> str:
        return f"{v:.2f}" if abs(v - round(v, 2)) < 1e-9 else f"{v:g}"

    steps = np.diff(t)
    if t.size >= 3 and steps[0] > 0 and np.allclose(steps, steps[0], rtol=0, atol=1e-9):
        return f"{num(t[0])}:{num(t[-1])}:{num(steps[0])}"
    return ",".join(num(v) for v in t)


def seed_mask(maps: ClassMaps, threshold: float) -> np.ndarray:
    """Seed mask of one image from its full-resolution maps (``maps.hr``).

    Args:
        maps: Class maps; channel ``j`` becomes segmentation id ``maps.keys[j]``.
        threshold: Background score ``t``.

    Returns:
        ``H×W`` ``uint8`` mask: ``keys[j]`` where map ``j`` is the largest and ``> t``,
        else 0.
    """
    _check_keys(maps.keys, 256)
    hr = maps.hr
    background = np.full((1, *hr.shape[1:]), threshold, dtype=hr.dtype)
    winner = np.concatenate([background, hr]).argmax(0)
    lut = np.concatenate([[0], maps.keys]).astype(np.uint8)
    return lut[winner]


class ThresholdSweep:
    """Confusion matrices (and part counts) of seed masks at many thresholds in one pass.

    Each pixel's best class ``k`` and score ``s`` are computed once. The pixel is predicted
    as ``k`` at every threshold below ``s`` and as background at the others, so a histogram
    over (ground truth, ``k``, number of thresholds below ``s``) determines every confusion
    matrix by a cumulative sum. Memory is ``O(N²·T)`` plus ``O(H·W)`` per image, not
    ``O(T·H·W)``.

    Args:
        num_classes: Number of segmentation classes N, background included.
        thresholds: Background thresholds; default :func:`default_thresholds`. Sorted and
            de-duplicated.
        ignore_index: Ground-truth value that is not evaluated.
    """

    def __init__(
        self,
        num_classes: int,
        thresholds: np.ndarray | list[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        t = default_thresholds() if thresholds is None else np.asarray(thresholds, np.float64)
        t = np.unique(t.reshape(-1))
        if t.size == 0 or not np.isfinite(t).all():
            raise ValueError(f"thresholds must be a non-empty list of numbers, got {thresholds}")
        self.num_classes = int(num_classes)
        self.thresholds = t
        self.ignore_index = ignore_index
        self._edges = t.astype(np.float32)
        bins = len(t) + 1
        self._hist = np.zeros((self.num_classes, self.num_classes, bins), dtype=np.int64)
        self._part_hist = np.zeros((NUM_PARTS, 3, bins), dtype=np.int64)

    def update(self, gt: np.ndarray, maps: ClassMaps, parts: np.ndarray | None = None) -> None:
        """Add one image: ground-truth mask, its class maps and optional part codes.

        Raises:
            DataError: On shape mismatches, keys outside ``1..N-1`` or non-finite scores.
        """
        gt = np.asarray(gt)
        hr = maps.hr
        if hr.shape[1:] != gt.shape:
            raise DataError(f"class maps of size {hr.shape[1:]} but ground truth {gt.shape}")
        n, bins = self.num_classes, len(self.thresholds) + 1
        _check_keys(maps.keys, n)
        if len(maps.keys):
            score = hr.max(0)
            if not np.isfinite(score).all():
                raise DataError("class maps contain NaN or infinite values")
            key = maps.keys[hr.argmax(0)]
            below = np.searchsorted(self._edges, score, side="left")  # thresholds < score
        else:
            key = np.zeros(gt.shape, dtype=np.int64)
            below = np.zeros(gt.shape, dtype=np.int64)
        valid = gt != self.ignore_index
        g = gt[valid].astype(np.int64)
        if g.size and g.max() >= n:
            raise DataError(f"ground truth has class ids above {n - 1} (other than ignore)")
        k, b = key[valid], below[valid]
        index = (g * n + k) * bins + b
        self._hist += np.bincount(index, minlength=n * n * bins).reshape(n, n, bins)
        if parts is not None:
            parts = np.asarray(parts)
            if parts.shape != gt.shape:
                raise DataError(f"part annotation {parts.shape} but ground truth {gt.shape}")
            code = parts[valid].astype(np.int64)
            keep = code < NUM_PARTS
            # 0: background ground truth, 1: foreground guessed right, 2: foreground guessed wrong
            kind = np.where(g == 0, 0, np.where(k == g, 1, 2))
            index = (code[keep] * 3 + kind[keep]) * bins + b[keep]
            counts = np.bincount(index, minlength=NUM_PARTS * 3 * bins)
            self._part_hist += counts.reshape(NUM_PARTS, 3, bins)

    def merge(self, other: ThresholdSweep) -> ThresholdSweep:
        """Add the counts of ``other`` (same classes and thresholds) in place."""
        if other.num_classes != self.num_classes or not np.array_equal(
            other.thresholds, self.thresholds
        ):
            raise ValueError("cannot merge sweeps with different classes or thresholds")
        self._hist += other._hist
        self._part_hist += other._part_hist
        return self

    def matrices(self) -> np.ndarray:
        """``(T, N, N)`` confusion counts, one matrix per threshold (ascending)."""
        # above[..., i] = pixels whose score exceeds threshold i, predicted as their class
        above = _tail_sums(self._hist)[..., 1:]
        stack = np.moveaxis(above, -1, 0).copy()
        stack[:, :, 0] += self._hist.sum((1, 2))[None] - above.sum(1).T
        return stack

    def confusion(self, index: int) -> ConfusionMatrix:
        """The :class:`ConfusionMatrix` at ``self.thresholds[index]``."""
        cm = ConfusionMatrix(self.num_classes, self.ignore_index)
        cm.matrix = self.matrices()[index]
        return cm

    def part_counts(self) -> list[PartCounts]:
        """One :class:`PartCounts` per threshold (all zero when no parts were given)."""
        hist = self._part_hist
        above = _tail_sums(hist)[..., 1:]  # (parts, kind, T)
        total = hist.sum((1, 2))
        out = []
        for i in range(len(self.thresholds)):
            counts = np.zeros((NUM_PARTS, 3), dtype=np.int64)
            counts[:, TOTAL] = total
            counts[:, CORRECT] = above[:, 1, i] + hist[:, 0].sum(-1) - above[:, 0, i]
            counts[:, FOREGROUND] = above[:, :, i].sum(-1)
            out.append(PartCounts(counts))
        return out


def _tail_sums(hist: np.ndarray) -> np.ndarray:
    """``out[..., j] = hist[..., j:].sum(-1)``."""
    return np.flip(np.cumsum(np.flip(hist, -1), -1), -1)


def _check_keys(keys: np.ndarray, num_classes: int) -> None:
    if keys.size and (keys.min() < 1 or keys.max() >= num_classes):
        raise DataError(
            f"class-map keys {keys.tolist()} outside the foreground ids 1..{num_classes - 1}"
        )
