"""CLI commands: ``wsss saliency pseudo`` (pseudo-saliency masks from saliency maps)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from wsss.cli.options import DatasetFormat, escape, set_option, settings, workers_option

console = Console()

saliency_app = typer.Typer(
    name="saliency",
    help="Class-agnostic saliency (C²AM): pseudo-saliency masks from saliency maps.",
    no_args_is_help=True,
)

PSEUDO_HELP = (
    "Write pseudo-saliency masks (<id>.png, 255 salient, 0 background) of a split from its "
    "saliency maps: salient above saliency.threshold (0.2), then a two-label dense CRF "
    "(saliency.crf_iterations, 10; needs the crf extra, 0 skips it). Images without any "
    "labelled class get an all-background mask, as the reference. Resumes an interrupted run "
    "(existing masks are kept unless --overwrite). The masks train the saliency detector "
    "(wsss train --task saliency_detector --masks DIR).\n\n"
    "Example:\n\n"
    "  wsss saliency pseudo --data VOC2012 --split train_aug --saliency runs/ccam-h-maps "
    "--out runs/pseudo-saliency --workers 8"
)


def pseudo(
    data: Path = typer.Option(..., "--data", help="Dataset root."),
    format: DatasetFormat = typer.Option(DatasetFormat.voc, "--format", help="Dataset format."),
    split: str = typer.Option("train", "--split", help="Split to make masks for."),
    saliency: Path = typer.Option(
        ..., "--saliency", help="Folder of one-channel saliency maps <id>.npz."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder of masks <id>.png."),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Salient above it (sets saliency.threshold; default 0.2)."
    ),
    crf_iterations: int | None = typer.Option(
        None,
        "--crf-iterations",
        min=0,
        help="CRF iterations (sets saliency.crf_iterations; default 10, 0: no CRF).",
    ),
    keep_unlabelled: bool = typer.Option(
        False,
        "--keep-unlabelled",
        help="Threshold images without labels too (for splits without image labels).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo masks that exist."),
    sets: list[str] = set_option("saliency.threshold=0.3"),
    workers: int = workers_option(0, "running the CRF"),
) -> None:
    from wsss.config.sections import SaliencySection
    from wsss.data.datasets import build_dataset
    from wsss.io.maps import MapStore
    from wsss.io.masks import MaskStore
    from wsss.refine.saliency import make_pseudo_saliency

    config = settings(
        SaliencySection,
        sets,
        {"threshold": threshold, "crf_iterations": crf_iterations},
        section="saliency",
    )
    dataset = build_dataset(format.value, data, split)
    run = make_pseudo_saliency(
        dataset,
        MapStore(saliency),
        MaskStore(out),
        threshold=config.threshold,
        crf_iterations=config.crf_iterations,
        unlabelled="keep" if keep_unlabelled else "background",
        overwrite=overwrite,
        workers=workers,
    )
    console.print(
        f"[green]pseudo-saliency[/] {run.written} written, {run.skipped} kept → {escape(str(out))}"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    saliency_app.command("pseudo", help=PSEUDO_HELP)(pseudo)
    app.add_typer(saliency_app, name="saliency")
