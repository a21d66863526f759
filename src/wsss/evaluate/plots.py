"""Figures of evaluation results (matplotlib, headless)."""

from __future__ import annotations

import os
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wsss.io.atomic import atomic_path

__all__ = ["save_threshold_curve"]

CURVES = (
    ("miou", "mIoU"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("fp", "FP"),
    ("fn", "FN"),
)


def save_threshold_curve(result: dict[str, Any], png_path: str | os.PathLike) -> None:
    """Plot mIoU, precision, recall, FP and FN against the background threshold.

    Args:
        result: An :func:`wsss.evaluate.evaluate` result made with ``sweep=True``.
        png_path: Output PNG, written atomically.
    """
    sweep = result.get("sweep")
    if not sweep:
        raise ValueError("the result has no threshold sweep (evaluate with sweep=True)")
    thresholds = [row["threshold"] for row in sweep]
    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, label in CURVES:
        values = [float("nan") if row[key] is None else row[key] for row in sweep]
        ax.plot(thresholds, values, marker="o", markersize=3, label=label)
    chosen = result["threshold"]
    tag = "oracle" if result.get("oracle") else "chosen"
    ax.axvline(chosen, color="0.3", linestyle="--", linewidth=1)
    miou = result["miou"] if result["miou"] is not None else float("nan")
    ax.annotate(
        f"{tag} t={chosen:g}\nmIoU {miou:.1f}",
        xy=(chosen, miou if miou == miou else 0.0),
        xytext=(6, -28),
        textcoords="offset points",
        fontsize=8,
    )
    ax.set_xlabel("background threshold")
    ax.set_ylabel("%  (P, R, FP, FN: mean over foreground)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{result.get('split', '')} · {result.get('num_images', '?')} images", fontsize=9)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")
