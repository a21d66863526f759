"""CLI commands: ``wsss lpcam fit`` (prototypes) and ``wsss lpcam maps`` (LPCAM class maps)."""

from __future__ import annotations

from pathlib import Path

import typer

from wsss.cli.maps_cmds import (
    _BATCH_HELP,
    _DEVICE_HELP,
    _MPX_HELP,
    _RESTART_HELP,
    _SCALES_HELP,
    run_maps_command,
)
from wsss.cli.options import set_option, settings

lpcam_app = typer.Typer(
    help="LPCAM: class maps from clustered local prototypes (fit prototypes, then maps).",
    no_args_is_help=True,
)


def _load(checkpoint: Path, device: str, dataset):
    """The classifier on ``device``, checked against the dataset's classes."""
    from wsss.models import load_model
    from wsss.runtime import resolve_device

    target = resolve_device(device)
    model, _ = load_model(checkpoint, map_location=target, classes=dataset.classes)
    return model, target


def _print_summary(prototypes) -> None:
    from rich.console import Console
    from rich.table import Table

    from wsss.diagnostics.prototypes import prototype_composition

    console = Console()
    table = Table(title="LPCAM prototypes")
    for column in ("class", "images", "fg feats", "ctx feats", "class protos", "ctx protos"):
        table.add_column(column, justify="left" if column == "class" else "right")
    table.add_column("note")
    for entry in prototypes.meta["per_class"]:
        fg, ctx = entry["foreground"], entry["context"]
        table.add_row(
            entry["class"],
            str(entry["images"]),
            str(fg["features"] if fg else 0),
            str(ctx["features"] if ctx else 0),
            str(fg["selected"] if fg else 0),
            str(ctx["selected"] if ctx else 0),
            "fallback: best centre below mu_f" if entry.get("fallback") else "",
        )
    console.print(table)
    rows = prototype_composition(prototypes)
    if not rows:
        return
    parts = ("head", "body", "context", "background", "other_object")
    table = Table(title="Prototype composition (share of cluster members)")
    for column in ("class", "kind", "#", "P", "members", *parts):
        table.add_column(column, justify="left" if column in ("class", "kind") else "right")
    for row in rows:
        table.add_row(
            row["class"],
            row["kind"],
            str(row["index"]),
            f"{row['score']:.3f}",
            str(row["members"]),
            *(f"{row[p]:.2f}" for p in parts),
        )
    console.print(table)


@lpcam_app.command("fit")
def fit_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Trained classifier checkpoint."),
    data: Path = typer.Option(..., "--data", help="Dataset root."),
    format: str = typer.Option("voc", "--format", help="Dataset format (voc, coco, folder)."),
    split: str = typer.Option("train", "--split", help="Split of the clustering images."),
    cams: Path = typer.Option(..., "--cams", help="Folder of CAM class maps <id>.npz."),
    out: Path = typer.Option(..., "--out", help="Prototype file to write (.safetensors)."),
    k: int | None = typer.Option(
        None, "--k", min=1, help="Clusters per set (lpcam.k; VOC 12 default, COCO 20)."
    ),
    tau: float | None = typer.Option(
        None, "--tau", help="CAM threshold fg/context (lpcam.tau; VOC 0.1 default, COCO 0.25)."
    ),
    mu_f: float | None = typer.Option(None, "--mu-f", help="Class prototypes: P > mu_f (0.9)."),
    mu_b: float | None = typer.Option(
        None, "--mu-b", help="Context prototypes: P < mu_b (VOC 0.9 default, COCO 0.5)."
    ),
    mu_low: float | None = typer.Option(
        None, "--mu-low", help="Context prototypes: P > mu_low (VOC 0.05 default, COCO 0)."
    ),
    per_class: int | None = typer.Option(
        None, "--per-class", min=1, help="Images sampled per class (default: all)."
    ),
    replace: bool | None = typer.Option(
        None, "--replace", help="Sample images with replacement (default: without)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of sampling and k-means (0)."),
    sets: list[str] = set_option("lpcam.k=20"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:i]."),
) -> None:
    """Fit class and context prototypes from a classifier and its CAMs.

    Example:

      wsss lpcam fit --checkpoint runs/cam/checkpoints/last.safetensors --data VOC2012 --cams
      runs/cam/maps --out runs/cam/prototypes.safetensors --set lpcam.max_iter=200

    Every prototype setting (lpcam.k, tau, mu_f, mu_b, mu_low, per_class, replace, seed and the
    k-means ones: init, update, stop, tol, max_iter, max_features, classes_per_pass) is set
    with --set; the dedicated options are shortcuts of the most used.
    """
    from wsss.data.datasets import build_dataset
    from wsss.diagnostics.prototypes import part_tags
    from wsss.maps.lpcam import PrototypeConfig, fit_prototypes, save_prototypes

    shortcuts = {
        "k": k,
        "tau": tau,
        "mu_f": mu_f,
        "mu_b": mu_b,
        "mu_low": mu_low,
        "per_class": per_class,
        "replace": replace,
        "seed": seed,
    }
    config = settings(PrototypeConfig, sets, shortcuts, section="lpcam")
    dataset = build_dataset(format, data, split)
    model, target = _load(checkpoint, device, dataset)
    prototypes = fit_prototypes(
        model, dataset, cams, config, device=target, checkpoint=checkpoint, tags=part_tags(dataset)
    )
    save_prototypes(out, prototypes)
    _print_summary(prototypes)
    typer.echo(f"wrote {out}")


@lpcam_app.command("maps")
def maps_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Trained classifier checkpoint."),
    prototypes: Path = typer.Option(..., "--prototypes", help="File from `wsss lpcam fit`."),
    data: Path = typer.Option(..., "--data", help="Dataset root."),
    format: str = typer.Option("voc", "--format", help="Dataset format (voc, coco, folder)."),
    split: str = typer.Option("train", "--split", help="Split to make maps for."),
    out: Path = typer.Option(..., "--out", help="Output folder of class maps <id>.npz."),
    no_context: bool = typer.Option(
        False, "--no-context", help="LPCAM-F: leave out the context prototypes."
    ),
    scales: str | None = typer.Option(None, "--scales", help=_SCALES_HELP),
    classes: str = typer.Option(
        "gt", "--classes", help="gt (labelled classes) or predicted (unlabelled images)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help=_BATCH_HELP),
    workers: int = typer.Option(0, "--workers", min=0, help="Image-decoding processes."),
    device: str | None = typer.Option(None, "--device", help=_DEVICE_HELP),
    sets: list[str] = set_option("maps.scales=[1.0,0.5]"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    restart: bool = typer.Option(False, "--restart", help=_RESTART_HELP),
    max_input_megapixels: float | None = typer.Option(
        None, "--max-input-megapixels", help=_MPX_HELP
    ),
) -> None:
    """Write LPCAM (or LPCAM-F) class maps, drop-in replacements for CAM maps.

    A shortcut of `wsss maps --method lpcam` (which writes both kinds from one feature pass)
    that writes one kind into --out.

    Example:

      wsss lpcam maps --checkpoint runs/cam/checkpoints/last.safetensors --prototypes
      runs/cam/lpcam/prototypes.safetensors --data VOC2012 --split train --out runs/cam/lpcam
    """
    name = "lpcam_f" if no_context else "lpcam"
    run_maps_command(
        name,
        checkpoint=checkpoint,
        data=data,
        format=format,
        split=split,
        out={name: out},
        options={"prototypes": prototypes},
        scales=scales,
        classes=classes,
        batch_size=batch_size,
        workers=workers,
        device=device,
        sets=sets,
        amp=True,
        progress=progress,
        restart=restart,
        max_input_megapixels=max_input_megapixels,
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(lpcam_app, name="lpcam")
