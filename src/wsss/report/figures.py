"""Report figures (matplotlib, headless): threshold curves and example grids."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wsss.data.base import SegmentationDataset, voc_palette
from wsss.errors import DataError
from wsss.evaluate.seeds import seed_mask
from wsss.io.maps import load_class_maps

__all__ = [
    "colorize_mask",
    "example_grid",
    "figure_png",
    "heat_overlay",
    "pick_examples",
    "threshold_curves",
]


def figure_png(fig: Figure, dpi: int | None = None) -> bytes:
    """Render ``fig`` to PNG bytes."""
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def colorize_mask(mask: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """``H×W`` segmentation ids to an ``H×W×3`` ``uint8`` RGB image (VOC colours by default)."""
    palette = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    return palette[np.asarray(mask, dtype=np.uint8)]


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a ``[0, 1]`` heat map (``H×W``, jet colours) over an RGB ``uint8`` image."""
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heat map {heat.shape} does not match image {image.shape[:2]}")
    colours = matplotlib.colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3]
    blended = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * colours
    return np.round(blended * 255.0).astype(np.uint8)


def _sweep_column(sweep: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if row.get(key) is None else row[key] for row in sweep], float)


def threshold_curves(results: Mapping[str, Mapping[str, Any]]) -> Figure | None:
    """mIoU (left) and precision / recall (right) against the threshold, one colour per method.

    The fixed-threshold point of each method is a circle and its oracle best a star.

    Args:
        results: ``results.json`` content (method → evaluation with a ``sweep`` list).

    Returns:
        The figure, or None when no method has a sweep.
    """
    methods = [m for m, r in results.items() if r.get("sweep")]
    if not methods:
        return None
    fig = Figure(figsize=(11, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_miou, ax_pr = fig.subplots(1, 2)
    colours = matplotlib.colormaps["tab10"].colors
    for i, method in enumerate(methods):
        result, colour = results[method], colours[i % len(colours)]
        t = _sweep_column(result["sweep"], "threshold")
        ax_miou.plot(t, _sweep_column(result["sweep"], "miou"), color=colour, label=method)
        ax_miou.plot(result["threshold"], result["miou"], "o", color=colour, markersize=7)
        best = result.get("best")
        if best is not None:
            ax_miou.plot(best["threshold"], best["miou"], "*", color=colour, markersize=12)
        ax_pr.plot(t, _sweep_column(result["sweep"], "recall"), color=colour)
        ax_pr.plot(t, _sweep_column(result["sweep"], "precision"), "--", color=colour)
    ax_miou.plot([], [], "ko", label="fixed threshold")
    ax_miou.plot([], [], "k*", markersize=10, label="oracle best")
    ax_pr.plot([], [], "k-", label="recall")  # method colours as on the left
    ax_pr.plot([], [], "k--", label="precision")
    ax_miou.set_ylabel("mIoU (%)")
    ax_pr.set_ylabel("foreground mean (%)")
    ax_miou.set_title("seed mIoU vs background threshold", fontsize=10)
    ax_pr.set_title("precision (dashed) and recall (solid)", fontsize=10)
    for ax in (ax_miou, ax_pr):
        ax.set_xlabel("background threshold")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


# (results key, label) of the part chart: where each method finds the object, and where it
# spills onto the background
PART_BARS = (
    ("head_recall", "head R"),
    ("body_near_recall", "near-body R"),
    ("body_far_recall", "far-body R"),
    ("precision", "precision"),
    ("context_fp", "context FP"),
    ("background_fp", "other bg FP"),
)


def part_bars(results: Mapping[str, Mapping[str, Any]]) -> Figure | None:
    """Grouped bars at the fixed threshold: per method, recall on each object part, precision
    and background false positives (the synthetic benchmark's part annotation).

    Returns:
        The figure, or None when no method has part metrics.
    """
    methods = [m for m, r in results.items() if r.get("head_recall") is not None]
    if not methods:
        return None
    fig = Figure(figsize=(max(6.0, 1.3 * len(PART_BARS) * (0.5 + 0.12 * len(methods))), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colours = matplotlib.colormaps["tab10"].colors
    width = 0.8 / len(methods)
    x = np.arange(len(PART_BARS))
    for i, method in enumerate(methods):
        values = [results[method].get(key) for key, _ in PART_BARS]
        heights = [np.nan if v is None else v for v in values]
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width,
            heights,
            width,
            label=method,
            color=colours[i % len(colours)],
        )
    ax.set_xticks(x, [label for _, label in PART_BARS], fontsize=9)
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.set_title(
        f"where the seeds land (threshold {results[methods[0]]['threshold']:g})", fontsize=10
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars
    fig.tight_layout()
    return fig


def pick_examples(ids: Sequence[str], maps_dirs: Mapping[str, Path], count: int) -> list[str]:
    """Up to ``count`` ids spread evenly over ``ids``, each with a map file for every method."""
    usable = [i for i in ids if all((Path(d) / f"{i}.npz").is_file() for d in maps_dirs.values())]
    if len(usable) <= count:
        return usable
    picks = np.linspace(0, len(usable) - 1, count).round().astype(int)
    return [usable[i] for i in picks]


def example_grid(
    dataset: SegmentationDataset,
    ids: Sequence[str],
    maps_dirs: Mapping[str, str | os.PathLike],
    threshold: float = 0.3,
) -> Figure:
    """One row per image: image, ground truth, then per method its heat map and seed mask.

    The heat map is the maximum over the image's class maps; the seed mask uses ``threshold``
    as background score.

    Args:
        dataset: Dataset the ids belong to (images, masks, palette, class names).
        ids: Sample ids to show.
        maps_dirs: Method name → directory of its ``<id>.npz`` class-map files.
        threshold: Background threshold of the seed masks.
    """
    if not ids:
        raise ValueError("no example ids to draw")
    methods = list(maps_dirs)
    titles = ["image", "ground truth"]
    for m in methods:
        titles += [f"{m} heat map", f"{m} seed (t={threshold:g})"]
    rows, cols = len(ids), len(titles)
    fig = Figure(figsize=(1.7 * cols, 1.7 * rows + 0.3), dpi=90)
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for r, sample_id in enumerate(ids):
        image = dataset.load_image(sample_id)
        mask = dataset.load_mask(sample_id)
        cells = [image, None if mask is None else colorize_mask(mask, dataset.palette)]
        for m in methods:
            try:
                maps = load_class_maps(Path(maps_dirs[m]) / f"{sample_id}.npz")
            except DataError:
                cells += [None, None]
                continue
            heat = maps.hr.max(0) if len(maps.keys) else np.zeros(image.shape[:2], np.float32)
            cells.append(heat_overlay(image, heat) if heat.shape == image.shape[:2] else None)
            cells.append(colorize_mask(seed_mask(maps, threshold), dataset.palette))
        for c, cell in enumerate(cells):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if cell is None:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=8)
            else:
                ax.imshow(cell, interpolation="nearest")
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
        present = [dataset.classes[k] for k in np.flatnonzero(dataset.load_label(sample_id))]
        axes[r, 0].set_ylabel(f"{sample_id}\n{', '.join(present)}", fontsize=7)
    fig.tight_layout(pad=0.3)
    return fig
