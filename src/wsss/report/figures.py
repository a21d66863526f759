"""Report figures (matplotlib, headless): threshold curves, object parts, per-class IoU,
confusion matrices, training curves and the cell images of example grids."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wsss.data.base import voc_palette

__all__ = [
    "PART_BARS",
    "colorize_mask",
    "confusion_figure",
    "figure_png",
    "heat_overlay",
    "method_colours",
    "part_bars",
    "per_class_bars",
    "threshold_curves",
    "training_curves",
]


def method_colours(count: int) -> list[tuple[float, float, float]]:
    """``count`` distinguishable colours (tab10, then tab20 beyond ten)."""
    name = "tab10" if count <= 10 else "tab20"
    colours = matplotlib.colormaps[name].colors
    return [tuple(colours[i % len(colours)]) for i in range(count)]


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


def threshold_curves(results: Mapping[str, Mapping[str, Any]], what: str = "seed") -> Figure | None:
    """mIoU (left) and precision / recall (right) against the threshold, one colour per method.

    The fixed-threshold point of each method is a circle and its oracle best a star.

    Args:
        results: Entries with a ``sweep`` list (others are skipped).
        what: ``"seed"`` (background threshold of seed masks) or ``"saliency"`` (threshold
            above which a pixel is salient); names the axes.

    Returns:
        The figure, or None when no method has a sweep.
    """
    methods = [m for m, r in results.items() if r.get("sweep")]
    if not methods:
        return None
    fig = Figure(figsize=(11, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_miou, ax_pr = fig.subplots(1, 2)
    lines = []
    for method, colour in zip(methods, method_colours(len(methods)), strict=True):
        result = results[method]
        t = _sweep_column(result["sweep"], "threshold")
        (line,) = ax_miou.plot(t, _sweep_column(result["sweep"], "miou"), color=colour)
        lines.append(line)
        if result.get("threshold") is not None and result.get("miou") is not None:
            ax_miou.plot(result["threshold"], result["miou"], "o", color=colour, markersize=7)
        best = result.get("best")
        if best is not None and best.get("miou") is not None:
            ax_miou.plot(best["threshold"], best["miou"], "*", color=colour, markersize=12)
        ax_pr.plot(t, _sweep_column(result["sweep"], "recall"), color=colour)
        ax_pr.plot(t, _sweep_column(result["sweep"], "precision"), "--", color=colour)
    ax_miou.plot([], [], "ko", label="fixed threshold")
    ax_miou.plot([], [], "k*", markersize=10, label="oracle best")
    ax_pr.plot([], [], "k-", label="recall")  # method colours as on the left
    ax_pr.plot([], [], "k--", label="precision")
    if what == "saliency":
        xlabel, ylabel = "saliency threshold", "precision / recall (%)"
    else:
        xlabel, ylabel = "background threshold", "foreground mean (%)"
    ax_miou.set_ylabel("mIoU (%)")
    ax_pr.set_ylabel(ylabel)
    ax_miou.set_title(f"{what} mIoU vs {xlabel}", fontsize=10)
    ax_pr.set_title("precision (dashed) and recall (solid)", fontsize=10)
    for ax in (ax_miou, ax_pr):
        ax.set_xlabel(xlabel)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    _methods_legend(fig, lines, methods)
    return fig


def _methods_legend(fig: Figure, handles: list, labels: list[str]) -> None:
    """One legend of the methods under the axes, in as many columns as fit."""
    columns = min(len(labels), 8)
    rows = math.ceil(len(labels) / columns)
    fig.set_figheight(fig.get_figheight() + 0.25 * rows)
    fig.tight_layout(rect=(0, 0.28 * rows / fig.get_figheight() + 0.02, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=8, frameon=False)


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
    colours = method_colours(len(methods))
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
            color=colours[i],
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


def per_class_bars(results: Mapping[str, Mapping[str, Any]], title: str = "") -> Figure | None:
    """Grouped bars of each method's per-class IoU (its main entry, not the oracle best).

    Returns:
        The figure, or None when no method has per-class scores.
    """
    methods = [m for m, r in results.items() if r.get("per_class")]
    if not methods:
        return None
    names: list[str] = []
    for m in methods:
        names += [n for n in results[m]["per_class"] if n not in names]
    # at most 14 in: with many classes and methods the bars get thin, the page stays readable
    width = float(np.clip(2.0 + len(names) * (0.25 + 0.09 * len(methods)), 7.0, 14.0))
    fig = Figure(figsize=(width, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    bar = 0.8 / len(methods)
    x = np.arange(len(names))
    handles = []
    for i, (method, colour) in enumerate(zip(methods, method_colours(len(methods)), strict=True)):
        per_class = results[method]["per_class"]
        heights = [per_class.get(n, {}).get("iou") for n in names]
        heights = [np.nan if h is None else h for h in heights]
        offset = (i - (len(methods) - 1) / 2) * bar
        handles.append(ax.bar(x + offset, heights, bar, color=colour))
    rotate = 45 if max(len(n) for n in names) * len(names) > 8 * width else 0
    ax.set_xticks(x, names, fontsize=8)
    if rotate:
        ax.tick_params(axis="x", labelrotation=rotate)
        for label in ax.get_xticklabels():
            label.set(ha="right", rotation_mode="anchor")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _methods_legend(fig, handles, methods)
    return fig


def confusion_figure(
    counts: np.ndarray | Sequence[Sequence[float]], class_names: Sequence[str], title: str = ""
) -> Figure:
    """A confusion matrix normalised by its rows (the ground-truth classes).

    Each row shows where the pixels of one ground-truth class went, in percent, so the
    diagonal is the recall. A last extra column counts predicted ignore pixels (255).

    Args:
        counts: ``N×N`` pixel counts (rows ground truth, columns prediction), or ``N×(N+1)``.
        class_names: The N class names, background first.
        title: Axes title.

    Raises:
        ValueError: The shape does not match the class names.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = len(class_names)
    if counts.ndim != 2 or counts.shape[0] != n or counts.shape[1] not in (n, n + 1):
        raise ValueError(f"confusion counts of shape {counts.shape} for {n} class names")
    totals = counts.sum(1, keepdims=True)
    share = np.divide(100.0 * counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
    columns = [*class_names, "ignore"][: counts.shape[1]]
    side = float(np.clip(1.6 + 0.34 * n, 4.0, 28.0))
    fig = Figure(figsize=(side + 1.2, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="% of the row's pixels")
    font = 8 if n <= 25 else 6
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=font)
    ax.set_yticks(range(n), class_names, fontsize=font)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if n <= 25:  # room for the numbers
        for (r, c), value in np.ndenumerate(share):
            if np.isfinite(value) and value >= 0.5:
                colour = "white" if value > 60 else "black"
                ax.text(c, r, f"{value:.0f}", ha="center", va="center", fontsize=6, color=colour)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _numeric(records: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [
        (r["step"], r[key])
        for r in records
        if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
    ]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pairs, strict=True)
    return np.asarray(steps, float), np.asarray(values, float)


def training_curves(training: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure | None:
    """One row per training run: its losses, its learning rate and its validation scores.

    A record with ``lr`` is a training step: its ``loss`` and other keys ending in ``loss`` are
    drawn as lines, ``lr`` and ``lr/*`` on the middle axes. Any other record is a validation:
    its numeric keys (besides ``step`` and ``epoch``) are drawn with markers, losses beside
    the training losses (dashed), scores on the right axes.

    Args:
        training: Run name → its ``metrics.jsonl`` records.

    Returns:
        The figure, or None when no run has a record.
    """
    runs = {name: list(records) for name, records in training.items() if records}
    if not runs:
        return None
    fig = Figure(figsize=(12, 3.0 * len(runs)), dpi=100)
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(len(runs), 3, squeeze=False))
    skip = {"step", "epoch"}
    for row, (name, records) in zip(axes, runs.items(), strict=True):
        steps = [r for r in records if "lr" in r]
        vals = [r for r in records if "lr" not in r]
        ax_loss, ax_lr, ax_val = row
        train_keys = sorted({k for r in steps for k in r if k.endswith("loss")}, key=_loss_first)
        val_keys = sorted({k for r in vals for k in r if k not in skip})
        colours = method_colours(len(train_keys) + len(val_keys))
        for key, colour in zip(train_keys, colours, strict=False):
            ax_loss.plot(*_numeric(steps, key), color=colour, linewidth=1.2, label=key)
        for i, key in enumerate(val_keys):
            colour = colours[len(train_keys) + i]
            target = ax_loss if key.endswith("loss") else ax_val
            style = "o--" if key.endswith("loss") else "o-"
            target.plot(*_numeric(vals, key), style, color=colour, markersize=4, label=key)
        for key in sorted({k for r in steps for k in r if k == "lr" or k.startswith("lr/")}):
            ax_lr.plot(*_numeric(steps, key), linewidth=1.2, label=key)
        ax_loss.set_title(f"{name}: loss", fontsize=10)
        ax_lr.set_title(f"{name}: learning rate", fontsize=10)
        ax_val.set_title(f"{name}: validation", fontsize=10)
        if not val_keys or all(k.endswith("loss") for k in val_keys):
            ax_val.text(0.5, 0.5, "no validation scores", ha="center", va="center", fontsize=9)
        for ax in row:
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _loss_first(key: str) -> tuple[int, str]:
    return (0 if key == "loss" else 1, key)
