"""CLI commands: ``wsss cams`` (CAM class maps with test-time augmentation)."""

from __future__ import annotations

from pathlib import Path

import typer

from wsss.errors import ConfigError


def parse_scales(text: str) -> tuple[float, ...]:
    """``"1.0,0.5,1.5,2.0"`` → ``(1.0, 0.5, 1.5, 2.0)``; a clear error otherwise."""
    try:
        scales = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise ConfigError(f"--scales must be comma-separated numbers, got {text!r}") from None
    if any(not s > 0 for s in scales):
        raise ConfigError(f"--scales must be positive, got {text!r}")
    return scales


def cams(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Trained classifier checkpoint."),
    data: Path = typer.Option(..., "--data", help="Dataset root."),
    format: str = typer.Option("voc", "--format", help="Dataset format (voc, coco, folder)."),
    split: str = typer.Option("train", "--split", help="Split to make maps for."),
    out: Path = typer.Option(..., "--out", help="Output folder of class maps <id>.npz."),
    scales: str = typer.Option("1.0,0.5,1.5,2.0", "--scales", help="TTA scales."),
    classes: str = typer.Option(
        "gt", "--classes", help="gt (labelled classes) or predicted (unlabelled images)."
    ),
    batch_size: int = typer.Option(
        1, "--batch-size", "--batch", min=1, help="Images per call (equal sizes batch together)."
    ),
    workers: int = typer.Option(2, "--workers", min=0, help="Image-decoding processes."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:i]."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="float16 autocast on CUDA."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """Write CAM class maps, one <id>.npz per image.

    Each map sums the classifier's class activations at every --scales factor and on its
    horizontal flip, keeps the image's classes and is divided by its maximum (values in [0, 1],
    no background channel: the background is a threshold applied at evaluation).

    Resumes an interrupted run. Multi-GPU: launch the same command with torchrun; rank r takes
    every world-th image.

    Example:

      wsss cams --checkpoint runs/cam/checkpoints/last.safetensors --data VOC2012 --out maps
    """
    from wsss.data.datasets import build_dataset
    from wsss.maps.runner import run_maps
    from wsss.models import load_model
    from wsss.runtime import distributed, resolve_device

    tta_scales = parse_scales(scales)
    if classes not in ("gt", "predicted"):
        raise ConfigError(f"--classes must be gt or predicted, got {classes!r}")
    info = distributed.init_distributed()
    try:
        try:
            target = resolve_device(device, info.local_rank)
        except RuntimeError as e:
            raise ConfigError(f"--device {device!r}: {e}") from None
        dataset = build_dataset(format, data, split)
        model, _ = load_model(checkpoint, map_location=target, classes=dataset.classes)
        result = run_maps(
            "cam",
            model,
            dataset,
            out,
            scales=tta_scales,
            classes=classes,
            device=target,
            amp=amp,
            batch_size=batch_size,
            num_workers=workers,
            checkpoint=checkpoint,
            progress=progress,
        )
    finally:
        distributed.cleanup()
    if info.is_main:
        typer.echo(
            f"{result.written} maps written, {result.skipped} already there, in "
            f"{result.out_dir} ({result.seconds:.1f} s)"
        )


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("cams")(cams)
