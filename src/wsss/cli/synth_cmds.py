"""CLI commands: ``wsss synth`` writes the synthetic benchmark."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from wsss.data.synthetic import SynthConfig, SynthStats, generate_synthetic
from wsss.errors import ConfigError


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(
            f"{option}: expected comma-separated class indices, got {text!r}"
        ) from None


def synth(
    root: Path = typer.Argument(..., help="Output folder (VOC layout)."),
    seed: int = typer.Option(0, help="Master seed: same seed and settings give the same bytes."),
    train: int = typer.Option(800, help="Number of training images."),
    val: int = typer.Option(200, help="Number of validation images."),
    size_min: int = typer.Option(96, help="Smallest image side (px)."),
    size_max: int = typer.Option(144, help="Largest image side (px)."),
    classes: int = typer.Option(6, help="Number of foreground classes."),
    body_tint: float = typer.Option(
        0.04, help="Share of the class colour in bodies (0 = bodies tell only a class pair)."
    ),
    cooccurrence: float = typer.Option(0.5, help="Chance an extra object is the partner class."),
    context_classes: str = typer.Option(
        "0,2", help="Comma-separated indices of classes linked to a background texture."
    ),
    context_rate: float = typer.Option(0.85, help="Chance of the context with its class."),
    context_absent_rate: float = typer.Option(
        0.25, help="Chance of a class's context without the class."
    ),
    image_format: str = typer.Option("jpg", help="Image files: jpg (VOC layout) or png."),
    workers: int = typer.Option(0, help="Processes (0 = one per CPU core)."),
    force: bool = typer.Option(False, "--force", help="Overwrite a folder holding other data."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Write the synthetic benchmark: images, masks, parts, XML labels and splits."""
    config = SynthConfig(
        seed=seed,
        train=train,
        val=val,
        size_min=size_min,
        size_max=size_max,
        num_classes=classes,
        body_tint=body_tint,
        cooccurrence=cooccurrence,
        context_classes=_int_list(context_classes, "--context-classes"),
        context_rate=context_rate,
        context_absent_rate=context_absent_rate,
        image_format=image_format,
    )
    workers = workers or os.cpu_count() or 1
    stats = generate_synthetic(root, config, progress=progress, force=force, workers=workers)
    print_stats(stats, config, Console())
    Console().print(f"wrote {sum(stats.images.values())} images to [bold]{root}[/]")


def print_stats(stats: SynthStats, config: SynthConfig, console: Console) -> None:
    """Show the dataset statistics as a per-class table and a summary table."""
    table = Table(title="classes")
    for column in ("class", "images", "with another class", "context with", "context without"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name in config.names:
        table.add_row(
            name,
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
    app.command("synth")(synth)
