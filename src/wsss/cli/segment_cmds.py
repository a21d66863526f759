"""CLI commands: ``wsss segment`` (segmentation masks of a split with a trained network)."""

from __future__ import annotations

from pathlib import Path

import typer

from wsss.cli.options import DatasetFormat, escape, set_option, settings, workers_option
from wsss.errors import ConfigError


def _scales(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"--scales must be comma-separated numbers, got {text!r}") from None


def segment(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", help="Segmentation checkpoint: a run directory or its weights file."
    ),
    data: Path = typer.Option(..., "--data", help="Dataset root."),
    format: DatasetFormat = typer.Option(DatasetFormat.voc, "--format", help="Dataset format."),
    split: str = typer.Option("val", "--split", help="Split to segment."),
    out: Path = typer.Option(..., "--out", help="Output folder of masks <id>.png."),
    crf: bool | None = typer.Option(
        None, "--crf/--no-crf", help="Dense CRF with the DeepLab-v2 parameters (sets crf)."
    ),
    probs: bool | None = typer.Option(
        None, "--probs/--no-probs", help="Also save probabilities to OUT/probs (sets probs)."
    ),
    scales: str | None = typer.Option(
        None, "--scales", help="TTA scales, comma-separated (sets scales; default 0.5,1,1.5,2)."
    ),
    flip: bool | None = typer.Option(None, "--flip/--no-flip", help="Flip TTA (sets flip)."),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu or cuda[:i] (sets device)."
    ),
    workers: int | None = workers_option(None, "decoding images", "workers"),
    sets: list[str] = set_option("scales=[1.0]"),
    restart: bool = typer.Option(
        False, "--restart", help="Start over in an --out folder made with other settings."
    ),
    evaluate: bool = typer.Option(
        True, "--eval/--no-eval", help="Evaluate against the split's ground truth when it has one."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """Predict a mask per image with a trained segmentation network, one <id>.png each.

    Logits are summed over the --scales and their flips, turned into probabilities, optionally
    refined by the dense CRF, and the argmax is written as a palette PNG. The folder records
    its settings (masks.json); an interrupted run resumes, and a rerun with other settings is
    refused unless --restart. When the split has ground truth, the masks are evaluated (mIoU,
    precision, recall); `wsss eval --masks OUT` does the same later.

    Multi-GPU: launch the same command with torchrun; rank r takes every world-th image.

    Example:

      wsss segment --checkpoint runs/seg --data VOC2012 --split val --out preds/val --crf
    """
    from wsss.data.datasets import build_dataset
    from wsss.maps.segment import SegmentConfig, segment_split
    from wsss.models import load_model
    from wsss.runtime import distributed, resolve_device

    shortcuts = {
        "crf": crf,
        "probs": probs,
        "scales": _scales(scales),
        "flip": flip,
        "device": device,
        "workers": workers,
    }
    config = settings(SegmentConfig, sets, shortcuts, section="segment")
    info = distributed.init_distributed()
    try:
        try:
            target = resolve_device(config.device, info.local_rank)
        except RuntimeError as e:
            raise ConfigError(f"device {config.device!r}: {e}") from None
        dataset = build_dataset(format.value, data, split)
        model, _ = load_model(checkpoint, map_location=target, classes=dataset.classes)
        result = segment_split(
            model,
            dataset,
            out,
            scales=config.scales,
            flip=config.flip,
            crf=config.crf,
            save_probs=config.probs,
            device=target,
            amp=config.amp,
            checkpoint=checkpoint,
            batch_size=config.batch_size,
            num_workers=config.workers,
            restart=restart,
            progress=progress,
        )
    finally:
        distributed.cleanup()
    if not info.is_main:
        return
    typer.echo(
        f"{result.written} masks written, {result.skipped} already there, in "
        f"{result.out_dir} ({result.seconds:.1f} s)"
    )
    if evaluate and result.complete and dataset.ids:
        if dataset.load_mask(dataset.ids[0]) is None:
            typer.echo(f"split {escape(split)} has no ground truth: not evaluated")
            return
        from wsss.evaluate import evaluate as evaluate_masks
        from wsss.evaluate import print_result

        print_result(evaluate_masks(dataset, masks_dir=out, progress=progress))


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("segment")(segment)
