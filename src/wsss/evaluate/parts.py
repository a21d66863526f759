"""Diagnostics on the synthetic benchmark's part annotation (codes in ``wsss.data.parts``).

Per part code the counter keeps three numbers: pixels, pixels predicted as their
ground-truth class ("correct") and pixels predicted as any foreground class. From them:

- ``head_recall``, ``body_near_recall``, ``body_far_recall``, ``body_recall`` (near and far
  together): share of those pixels predicted as their ground-truth class;
- ``context_fp``: share of context-texture pixels (codes 4 and 5) predicted as foreground,
  ``context_present_fp`` / ``context_absent_fp`` the same per code;
- ``background_fp``: the same for other background (code 0).

Pixels whose ground truth or part code is ignore (255) are skipped.
"""

from __future__ import annotations

import numpy as np

from wsss.data import parts as codes
from wsss.data.base import IGNORE_INDEX
from wsss.errors import DataError

__all__ = ["PART_METRICS", "PartCounts"]

NUM_PARTS = len(codes.PART_NAMES)
TOTAL, CORRECT, FOREGROUND = 0, 1, 2

# metric name → (part codes, counted column)
PART_METRICS: dict[str, tuple[tuple[int, ...], int]] = {
    "head_recall": ((codes.HEAD,), CORRECT),
    "body_recall": ((codes.BODY_NEAR, codes.BODY_FAR), CORRECT),
    "body_near_recall": ((codes.BODY_NEAR,), CORRECT),
    "body_far_recall": ((codes.BODY_FAR,), CORRECT),
    "context_fp": ((codes.CONTEXT_PRESENT, codes.CONTEXT_ABSENT), FOREGROUND),
    "context_present_fp": ((codes.CONTEXT_PRESENT,), FOREGROUND),
    "context_absent_fp": ((codes.CONTEXT_ABSENT,), FOREGROUND),
    "background_fp": ((codes.OTHER_BACKGROUND,), FOREGROUND),
}


class PartCounts:
    """Streaming per-part pixel counts; mergeable across processes like the confusion matrix.

    Attributes:
        counts: ``(6, 3)`` ``int64``: per part code, pixels / correct / foreground.
    """

    def __init__(self, counts: np.ndarray | None = None) -> None:
        if counts is None:
            counts = np.zeros((NUM_PARTS, 3), dtype=np.int64)
        self.counts = np.asarray(counts, dtype=np.int64)
        if self.counts.shape != (NUM_PARTS, 3):
            raise ValueError(f"counts must have shape {(NUM_PARTS, 3)}, got {self.counts.shape}")

    def update(self, parts: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> PartCounts:
        """Add one image: part codes, ground-truth and predicted masks of equal shape."""
        parts, gt, pred = np.asarray(parts), np.asarray(gt), np.asarray(pred)
        if not parts.shape == gt.shape == pred.shape:
            raise DataError(
                f"part annotation {parts.shape}, ground truth {gt.shape} and prediction "
                f"{pred.shape} differ in shape"
            )
        valid = (gt != IGNORE_INDEX) & (parts < NUM_PARTS)
        code = parts[valid].astype(np.int64)
        g, p = gt[valid], pred[valid]
        self.counts[:, TOTAL] += np.bincount(code, minlength=NUM_PARTS)
        self.counts[:, CORRECT] += np.bincount(code[p == g], minlength=NUM_PARTS)
        self.counts[:, FOREGROUND] += np.bincount(code[p != 0], minlength=NUM_PARTS)
        return self

    def merge(self, other: PartCounts) -> PartCounts:
        """Add the counts of ``other`` in place."""
        self.counts += other.counts
        return self

    def __add__(self, other: PartCounts) -> PartCounts:
        return PartCounts(self.counts + other.counts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PartCounts):
            return NotImplemented
        return np.array_equal(self.counts, other.counts)

    def metrics(self) -> dict[str, float]:
        """The :data:`PART_METRICS` as fractions in [0, 1]; NaN where no pixel has the part."""
        out = {}
        for name, (part_codes, column) in PART_METRICS.items():
            rows = self.counts[list(part_codes)]
            total = rows[:, TOTAL].sum()
            out[name] = float(rows[:, column].sum() / total) if total else float("nan")
        return out
