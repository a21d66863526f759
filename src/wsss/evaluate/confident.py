"""Evaluate masks that leave pixels out (255): affinity labels against the ground truth.

Affinity labels mark the pixels they are unsure of with 255. Their quality has two sides:
how right the confident pixels are, and how many pixels are left out. :func:`evaluate_confident`
gives both from one confusion matrix over the pixels whose ground truth is labelled:

- the usual seed metrics (``miou``, ``fp``, ``fn``, ``precision``, ``recall``, per class;
  :mod:`wsss.evaluate.metrics`) over the **confident** pixels only (label ≠ 255);
- ``pixel_precision``: the share of confident pixels whose label is right;
  ``fg_precision`` / ``bg_precision``: the same over confident foreground / background pixels;
- ``ignored``: the share of pixels the labels leave out.

All in percent (``None`` when undefined), like :func:`wsss.evaluate.evaluate`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from wsss.data.base import IGNORE_INDEX, SegmentationDataset
from wsss.data.image_io import read_mask
from wsss.errors import DataError
from wsss.evaluate.metrics import SCORE_NAMES, class_scores, summary_scores
from wsss.io.masks import MaskStore

__all__ = ["evaluate_confident"]


def _percent(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else 100.0 * value


def _ratio(a: float, b: float) -> float | None:
    return 100.0 * a / b if b else None


def evaluate_confident(
    dataset: SegmentationDataset, masks_dir: str | os.PathLike
) -> dict[str, Any]:
    """Scores of a folder of masks with 255 = unsure (see the module docstring).

    Returns:
        ``split``, ``source``, ``num_images``, ``miou``, ``fp``, ``fn``, ``precision``,
        ``recall``, ``per_class``, ``pixel_precision``, ``fg_precision``, ``bg_precision``,
        ``ignored``.

    Raises:
        DataError: A mask file or a ground-truth mask is missing, or the sizes differ.
    """
    store = MaskStore(masks_dir)
    n = dataset.num_classes + 1
    # Columns 0..N−1 are labels, column N counts the 255 (ignored) label pixels.
    matrix = np.zeros((n, n + 1), np.int64)
    for sample_id in dataset.ids:
        gt = dataset.load_mask(sample_id)
        if gt is None:
            raise DataError(f"{dataset.root}: no ground-truth mask for {sample_id!r}")
        path = store.path(sample_id)
        if not path.is_file():
            raise DataError(f"{path}: mask file not found", path=path, kind="missing prediction")
        pred = read_mask(path, num_classes=dataset.num_classes, palette=dataset.palette)
        if pred.shape != gt.shape:
            raise DataError(f"{path}: mask of size {pred.shape} but ground truth {gt.shape}")
        valid = gt != IGNORE_INDEX
        g = gt[valid].astype(np.int64)
        p = pred[valid].astype(np.int64)
        p = np.where(p == IGNORE_INDEX, n, p)
        matrix += np.bincount(g * (n + 1) + p, minlength=n * (n + 1)).reshape(n, n + 1)
    confident = matrix[:, :n]
    right = np.trace(confident)
    per_class = class_scores(confident)
    result: dict[str, Any] = {
        "split": dataset.split,
        "source": {"type": "masks", "path": str(Path(masks_dir))},
        "num_images": len(dataset),
        **{k: _percent(v) for k, v in summary_scores(confident).items()},
        "per_class": {
            name: {key: _percent(per_class[key][i]) for key in SCORE_NAMES}
            for i, name in enumerate(dataset.class_names)
        },
        "pixel_precision": _ratio(right, confident.sum()),
        "fg_precision": _ratio(right - confident[0, 0], confident[:, 1:].sum()),
        "bg_precision": _ratio(confident[0, 0], confident[:, 0].sum()),
        "ignored": _ratio(matrix[:, n].sum(), matrix.sum()),
    }
    return result
