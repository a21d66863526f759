"""CLI commands: ``wsss synth`` writes the synthetic benchmark."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from wsss.cli.options import escape, set_option, settings, workers_option
from wsss.config import read_preset
from wsss.data.synthetic import SynthConfig, SynthStats, generate_synthetic
from wsss.errors import ConfigError


class ImageFormat(str, Enum):
    """Image files of the benchmark (``synth.image_format``)."""

    jpg = "jpg"
    png = "png"


def _int_list(text: str | None, option: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(
            f"{option}: expected comma-separated class indices, got {text!r}"
        ) from None


def _default(name: str) -> str:
    value = getattr(SynthConfig, name)
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _knob(name: str, help: str) -> Any:
    """A shortcut option for ``synth.<name>``; unset, the field keeps its default."""
    return typer.Option(None, help=f"{help} Sets synth.{name} (default {_default(name)}).")


SYNTH_HELP = (
    "Write the synthetic benchmark: images, masks, parts, XML labels and splits.\n\n"
    "The same settings give the same bytes. Every knob of wsss.data.synthetic.SynthConfig is "
    "settable with --set synth.KEY=VALUE; the options below are shortcuts for the common "
    "ones.\n\n"
    "Example:\n\n"
    "  wsss synth data/synth --train 400 --set synth.body_tint=0.3\n\n"
    "  wsss synth data/hard --preset hard-bodies   # the benchmark before its calibration"
)


def synth(
    root: Path = typer.Argument(..., help="Output folder (VOC layout)."),
    seed: int | None = _knob("seed", "Master seed: same seed and settings give the same bytes."),
    train: int | None = _knob("train", "Number of training images."),
    val: int | None = _knob("val", "Number of validation images."),
    size_min: int | None = _knob("size_min", "Smallest image side (px)."),
    size_max: int | None = _knob("size_max", "Largest image side (px)."),
    num_classes: int | None = _knob("num_classes", "Number of foreground classes."),
    body_tint: float | None = _knob(
        "body_tint", "Share of the class colour in bodies (0 = bodies tell only a class pair)."
    ),
    cooccurrence: float | None = _knob(
        "cooccurrence", "Chance an extra object is the partner class."
    ),
    context_classes: str | None = _knob(
        "context_classes", "Comma-separated indices of classes linked to a background texture."
    ),
    context_rate: float | None = _knob("context_rate", "Chance of the context with its class."),
    context_absent_rate: float | None = _knob(
        "context_absent_rate", "Chance of a class's context without the class."
    ),
    image_format: ImageFormat | None = _knob("image_format", "Image files: jpg (VOC) or png."),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="Pipeline preset or YAML file whose synth section to start from (e.g. hard-bodies).",
    ),
    sets: list[str] = set_option("synth.body_tint=0.3"),
    workers: int | None = workers_option(None, "rendering images (default: one per CPU core)"),
    force: bool = typer.Option(False, "--force", help="Overwrite a folder holding other data."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    shortcuts = {
        "seed": seed,
        "train": train,
        "val": val,
        "size_min": size_min,
        "size_max": size_max,
        "num_classes": num_classes,
        "body_tint": body_tint,
        "cooccurrence": cooccurrence,
        "context_classes": _int_list(context_classes, "--context-classes"),
        "context_rate": context_rate,
        "context_absent_rate": context_absent_rate,
        "image_format": image_format,
    }
    base = (read_preset(preset).get("synth") or {}) if preset is not None else {}
    if not isinstance(base, dict):
        raise ConfigError(f"--preset {preset}: its synth section is not a mapping of knobs")
    given = {k: v for k, v in shortcuts.items() if v is not None}
    config = settings(SynthConfig, sets, {**base, **given}, section="synth")
    processes = (os.cpu_count() or 1) if workers is None else max(1, workers)
    stats = generate_synthetic(root, config, progress=progress, force=force, workers=processes)
    console = Console()
    print_stats(stats, config, console)
    console.print(f"wrote {sum(stats.images.values())} images to [bold]{escape(str(root))}[/]")


def print_stats(stats: SynthStats, config: SynthConfig, console: Console) -> None:
    """Show the dataset statistics as a per-class table and a summary table."""
    table = Table(title="classes")
    for column in ("class", "images", "with another class", "context with", "context without"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name in config.names:
        table.add_row(
            escape(name),
            str(stats.class_occurrence[name]),
            f"{stats.class_cooccurrence[name]:.0%}",
            f"{stats.context_with_class[name]:.0%}" if name in stats.context_with_class else "-",
            f"{stats.context_without_class[name]:.0%}"
            if name in stats.context_without_class
            else "-",
        )
    console.print(table)

    summary = Table(title="dataset", show_header=False)
    summary.add_column("statistic")
    summary.add_column("value", justify="right")
    size, reach = stats.object_size, stats.body_reach
    rows = [
        ("images", ", ".join(f"{k} {v}" for k, v in stats.images.items())),
        (
            "height / width",
            f"{stats.height_range[0]}-{stats.height_range[1]} / "
            f"{stats.width_range[0]}-{stats.width_range[1]} px",
        ),
        ("objects per image", f"{stats.objects_per_image:.2f}"),
        ("images with 2+ classes", f"{stats.multi_label_rate:.0%}"),
        ("partner pair (2+ objects)", f"{stats.partner_rate:.0%}"),
        ("head / body area", f"{stats.head_body_ratio:.3f}"),
        ("body near the head", f"{stats.near_share:.0%}"),
        (
            "object / image area",
            f"median {size['p50']:.1%} (10-90%: {size['p10']:.1%}-{size['p90']:.1%})",
        ),
        (
            "body reach from head",
            f"median {reach['p50']:.0f} px (10-90%: {reach['p10']:.0f}-{reach['p90']:.0f})",
        ),
    ]
    for row in rows:
        summary.add_row(*row)
    console.print(summary)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("synth", help=SYNTH_HELP)(synth)
