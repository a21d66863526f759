"""Example grids: which images to show (fixed and worst) and how to draw their rows."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from wsss.data.base import IGNORE_INDEX, SegmentationDataset
from wsss.data.image_io import read_mask
from wsss.errors import DataError
from wsss.evaluate.seeds import seed_mask
from wsss.io.maps import load_class_maps
from wsss.report.figures import colorize_mask, heat_overlay
from wsss.report.inputs import ExampleColumn, ExampleSet

# Inches at 100 dpi: a grid as wide as the report's content (1240 px less padding) keeps its
# text at full size; cells shrink to MIN_CELL before the grid grows wider.
GRID_WIDTH = 12.0
MIN_CELL = 0.9

__all__ = [
    "ExampleChoice",
    "choose_examples",
    "column_mask",
    "example_grid",
    "image_iou",
    "scan_column",
    "usable_ids",
]


def image_iou(gt: np.ndarray, pred: np.ndarray, ignore_index: int = IGNORE_INDEX) -> float:
    """Per-image IoU in percent: the mean IoU over the classes in the ground truth or the
    prediction (background included), on the pixels whose ground truth is not ignored.

    A predicted ``ignore_index`` (an undecided pixel of a pseudo mask) matches no class, so it
    counts as a miss of the ground-truth class and as no class's false positive.

    Returns:
        The IoU, or NaN when every pixel's ground truth is ignored.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise DataError(f"prediction of size {pred.shape} but ground truth {gt.shape}")
    valid = gt != ignore_index
    g, p = gt[valid].astype(np.int64), pred[valid].astype(np.int64)
    classes = np.union1d(g, p[p != ignore_index])
    if classes.size == 0:
        return float("nan")
    ious = [((g == c) & (p == c)).sum() / ((g == c) | (p == c)).sum() for c in classes]
    return 100.0 * float(np.mean(ious))


def usable_ids(ids: Sequence[str], columns: Sequence[ExampleColumn]) -> list[str]:
    """The ids with a file in every required column, in their given order."""
    needed = [c for c in columns if c.required]
    return [i for i in ids if all(c.path(i).is_file() for c in needed)]


def column_mask(dataset: SegmentationDataset, column: ExampleColumn, sample_id: str) -> np.ndarray:
    """The mask a ``mask`` or ``seed`` column shows for ``sample_id``."""
    if column.kind == "seed":
        return seed_mask(load_class_maps(column.path(sample_id)), column.threshold)
    if column.kind == "mask":
        return read_mask(column.path(sample_id), dataset.num_classes, dataset.palette)
    raise ValueError(f"column {column.title!r} of kind {column.kind!r} holds no mask")


def scan_column(
    dataset: SegmentationDataset, column: ExampleColumn, ids: Sequence[str]
) -> tuple[dict[str, float], np.ndarray]:
    """Per-image IoU (:func:`image_iou`) of a mask column, and its confusion counts.

    Returns:
        ``(id → IoU, counts)``; ``counts`` is ``N×(N+1)`` with rows the ground truth, columns
        the prediction and a last column of predicted ignore pixels (N counts background).
    """
    n = dataset.num_classes + 1
    counts = np.zeros((n, n + 1), np.int64)
    scores: dict[str, float] = {}
    for sample_id in ids:
        gt = dataset.load_mask(sample_id)
        if gt is None:
            continue
        pred = column_mask(dataset, column, sample_id)
        scores[sample_id] = image_iou(gt, pred)
        valid = gt != IGNORE_INDEX
        g = gt[valid].astype(np.int64)
        p = pred[valid].astype(np.int64)
        p[p == IGNORE_INDEX] = n
        if g.size and (g.max() >= n or p.max() > n):
            raise DataError(f"{column.path(sample_id)}: class ids outside 0..{n - 1}")
        counts += np.bincount(g * (n + 1) + p, minlength=n * (n + 1)).reshape(n, n + 1)
    return scores, counts


@dataclass
class ExampleChoice:
    """The images an :class:`~wsss.report.inputs.ExampleSet` shows.

    Attributes:
        fixed: Ids spread evenly over the usable ids.
        worst: Ids of lowest per-image IoU, lowest first.
        scores: Per-image IoU of the ranking column (empty without one).
        confusion: Confusion counts of the ranking column over the usable ids (or None).
        ranked_by: The ranking column (or None).
    """

    fixed: list[str]
    worst: list[str]
    scores: dict[str, float]
    confusion: np.ndarray | None
    ranked_by: ExampleColumn | None


def choose_examples(example_set: ExampleSet) -> ExampleChoice:
    """Pick the fixed and worst images of ``example_set`` (worst ones exclude fixed ones;
    ties go to the earlier id; images without a ground truth are never worst)."""
    dataset = example_set.dataset
    ids = usable_ids(dataset.ids, example_set.columns)
    fixed = ids
    if len(ids) > example_set.fixed:
        picks = np.linspace(0, len(ids) - 1, example_set.fixed).round().astype(int)
        fixed = [ids[i] for i in picks] if example_set.fixed > 0 else []
    column = example_set.ranking_column()
    if column is None or example_set.worst <= 0:
        return ExampleChoice(fixed, [], {}, None, None)
    scores, counts = scan_column(dataset, column, ids)
    chosen = set(fixed)
    order = [i for i in ids if i in scores and i not in chosen and not np.isnan(scores[i])]
    order.sort(key=lambda i: scores[i])  # stable: ties keep the split's order
    return ExampleChoice(fixed, order[: example_set.worst], scores, counts, column)


def _cell(
    dataset: SegmentationDataset, column: ExampleColumn, sample_id: str, image: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(RGB cell, mask drawn or None); (None, None) when the file is unusable."""
    try:
        if column.kind in ("mask", "seed"):
            mask = column_mask(dataset, column, sample_id)
            return colorize_mask(mask, dataset.palette), mask
        maps = load_class_maps(column.path(sample_id))
    except DataError:
        return None, None
    if len(maps.keys):
        heat = maps.hr.max(0)
    else:
        heat = np.zeros(image.shape[:2], np.float32)
    if heat.shape != image.shape[:2]:
        resized = Image.fromarray(heat.astype(np.float32), mode="F").resize(
            (image.shape[1], image.shape[0]), Image.BILINEAR
        )
        heat = np.asarray(resized)
    return heat_overlay(image, heat), None


def _column_title(column: ExampleColumn) -> str:
    if column.kind == "seed":
        return f"{column.title} (t={column.threshold:g})"
    return column.title


def example_grid(
    dataset: SegmentationDataset,
    ids: Sequence[str],
    columns: Sequence[ExampleColumn],
    row_notes: Mapping[str, str] | None = None,
) -> tuple[Figure, set[int]]:
    """One row per image: the image, its ground truth, then each column.

    Args:
        dataset: The split the ids belong to.
        ids: Images to draw.
        columns: What to show after the ground truth.
        row_notes: Id → a line added under the row's label (e.g. its IoU).

    Returns:
        The figure and the mask values drawn (class ids, 255), for the colour legend.
    """
    if not ids:
        raise ValueError("no example ids to draw")
    titles = ["image", "ground truth", *(_column_title(c) for c in columns)]
    first = dataset.load_image(ids[0])
    aspect = float(np.clip(first.shape[0] / first.shape[1], 0.5, 1.5))
    rows, cols = len(ids), len(titles)
    # Cells narrow down to fit the page's width (text keeps its size), then the grid scrolls.
    size = float(np.clip((GRID_WIDTH - 0.5) / cols, MIN_CELL, 1.6))
    title_chars = max(8, int(size * 100 / 8))  # 9 pt: at most about 8 px a character
    label_chars = max(10, int(size * aspect * 100 / 7.5))  # along the row's height
    fig = Figure(figsize=(size * cols + 0.5, size * aspect * rows + 0.35), dpi=100)
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    drawn: set[int] = set()
    for r, sample_id in enumerate(ids):
        image = dataset.load_image(sample_id)
        gt = dataset.load_mask(sample_id)
        cells = [image, None if gt is None else colorize_mask(gt, dataset.palette)]
        if gt is not None:
            drawn.update(np.unique(gt).tolist())
        for column in columns:
            cell, mask = _cell(dataset, column, sample_id, image)
            cells.append(cell)
            if mask is not None:
                drawn.update(np.unique(mask).tolist())
        for c, cell in enumerate(cells):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():  # black masks side by side stay apart
                spine.set_edgecolor("#999")
            if cell is None:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=8)
            else:
                ax.imshow(cell, interpolation="nearest")
            if r == 0:
                ax.set_title("\n".join(textwrap.wrap(titles[c], title_chars)), fontsize=9)
        present = [dataset.classes[k] for k in np.flatnonzero(dataset.load_label(sample_id))]
        label = [sample_id, *textwrap.wrap(", ".join(present), label_chars)]
        if row_notes and sample_id in row_notes:
            label.append(row_notes[sample_id])
        axes[r, 0].set_ylabel("\n".join(label), fontsize=9)
    fig.tight_layout(pad=0.3)
    # tight_layout may leave no gap (even overlap) between images of equal aspect
    pars = fig.subplotpars
    fig.subplots_adjust(wspace=max(pars.wspace, 0.04), hspace=max(pars.hspace, 0.04))
    return fig, drawn
