"""CLI commands: ``wsss maps`` (any map method) and ``wsss cams`` (its CAM shortcut)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from wsss.cli.options import set_option
from wsss.errors import ConfigError

_SCALES_HELP = (
    "TTA scales, comma-separated, each with its horizontal flip (sets maps.scales; default "
    "1.0,0.5,1.5,2.0)."
)
_DEVICE_HELP = "auto, cpu or cuda[:i] (sets maps.device; default auto)."
_BATCH_HELP = "Images per call (equal sizes share forward passes); default 1 on CPU, 8 on GPU."
_MPX_HELP = (
    "Refuse an image whose largest scaled input exceeds this many megapixels [default: 40] "
    "(a map needs about 1.2 GB per image megapixel at scale 2 with a ResNet-50)."
)
_RESTART_HELP = "Start over a folder holding maps made with other settings (deletes them)."


def parse_scales(text: str) -> tuple[float, ...]:
    """``"1.0,0.5,1.5,2.0"`` → ``(1.0, 0.5, 1.5, 2.0)``; a clear error otherwise."""
    try:
        scales = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise ConfigError(f"--scales must be comma-separated numbers, got {text!r}") from None
    if any(not s > 0 for s in scales):
        raise ConfigError(f"--scales must be positive, got {text!r}")
    return scales


def parse_inputs(items: list[str] | None) -> dict[str, Path]:
    """``["prototypes=p.safetensors"]`` → ``{"prototypes": Path("p.safetensors")}``."""
    inputs: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--input must be NAME=PATH, got {item!r}")
        inputs[name.strip()] = Path(path)
    return inputs


def run_maps_command(
    method: str,
    *,
    checkpoint: Path,
    data: Path,
    format: str,
    split: str,
    out: Path | Mapping[str, Path],
    options: dict[str, Any],
    scales: str | None,
    classes: str,
    batch_size: int | None,
    workers: int,
    device: str | None,
    amp: bool,
    progress: bool,
    restart: bool,
    max_input_megapixels: float | None,
    sets: list[str] | None = None,
) -> None:
    """What ``wsss maps`` and its shortcuts do: load, run the runner, report."""
    from wsss.cli.options import settings
    from wsss.config.sections import MapsSection
    from wsss.data.datasets import build_dataset
    from wsss.maps.runner import run_maps
    from wsss.models import load_model
    from wsss.runtime import distributed, resolve_device

    shortcuts = {"scales": None if scales is None else parse_scales(scales), "device": device}
    section = settings(MapsSection, sets, shortcuts, section="maps")
    tta_scales, device = section.scales, section.device
    if classes not in ("gt", "predicted"):
        raise ConfigError(f"--classes must be gt or predicted, got {classes!r}")
    cap = {}
    if max_input_megapixels is not None:
        if not max_input_megapixels > 0:
            raise ConfigError(
                f"--max-input-megapixels must be positive, got {max_input_megapixels}"
            )
        cap["max_input_megapixels"] = max_input_megapixels
    info = distributed.init_distributed()
    try:
        target = resolve_device(device, info.local_rank)
        dataset = build_dataset(format, data, split)
        model, _ = load_model(checkpoint, map_location=target, classes=dataset.classes)
        result = run_maps(
            method,
            model,
            dataset,
            out,
            scales=tta_scales,
            classes=classes,
            device=target,
            amp=amp,
            batch_size=batch_size,
            num_workers=workers,
            method_options=options,
            checkpoint=checkpoint,
            progress=progress,
            restart=restart,
            **cap,
        )
    finally:
        distributed.cleanup()
    if info.is_main:
        folders = ", ".join(str(p) for p in result.outputs.values())
        typer.echo(
            f"{result.written} maps written, {result.skipped} already there, in {folders} "
            f"({result.seconds:.1f} s)"
        )


def maps(
    method: str = typer.Option(
        ...,
        "--method",
        help="Map method: cam, lpcam (writes lpcam/ and lpcam_f/), lpcam_f, ccam (C²AM "
        "saliency, one channel), saliency_detector (a trained saliency detector's maps).",
    ),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint of the model it runs."),
    data: Path = typer.Option(..., "--data", help="Dataset root."),
    format: str = typer.Option("voc", "--format", help="Dataset format (voc, coco, folder)."),
    split: str = typer.Option("train", "--split", help="Split to make maps for."),
    out: Path = typer.Option(
        ...,
        "--out",
        help="Folder of the maps <id>.npz; for a method with several outputs, the folder "
        "that receives one sub-folder per output.",
    ),
    inputs: list[str] = typer.Option(
        None, "--input", help="Further input file of the method, NAME=PATH (repeatable)."
    ),
    scales: str | None = typer.Option(None, "--scales", help=_SCALES_HELP),
    classes: str = typer.Option(
        "gt", "--classes", help="gt (labelled classes) or predicted (unlabelled images)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", "--batch", min=1, help=_BATCH_HELP),
    workers: int = typer.Option(2, "--workers", min=0, help="Image-decoding processes."),
    device: str | None = typer.Option(None, "--device", help=_DEVICE_HELP),
    sets: list[str] = set_option("maps.scales=[1.0,0.5]"),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="float16 autocast on CUDA."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    restart: bool = typer.Option(False, "--restart", help=_RESTART_HELP),
    max_input_megapixels: float | None = typer.Option(
        None, "--max-input-megapixels", help=_MPX_HELP
    ),
) -> None:
    """Write the maps of a split with any registered map method, one <id>.npz per image.

    Example: wsss maps --method lpcam --input prototypes=protos.safetensors
    --checkpoint runs/cam/checkpoints/last.safetensors --data VOC2012 --out runs/cam/maps

    Resumes an interrupted run; a rerun with other settings is refused (see --restart).
    Multi-GPU: launch the same command with torchrun; rank r takes every world-th image.
    """
    run_maps_command(
        method,
        checkpoint=checkpoint,
        data=data,
        format=format,
        split=split,
        out=out,
        options=parse_inputs(inputs),
        scales=scales,
        classes=classes,
        batch_size=batch_size,
        workers=workers,
        device=device,
        sets=sets,
        amp=amp,
        progress=progress,
        restart=restart,
        max_input_megapixels=max_input_megapixels,
    )


def cams(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Trained classifier checkpoint."),
    data: Path = typer.Option(..., "--data", help="Dataset root."),
    format: str = typer.Option("voc", "--format", help="Dataset format (voc, coco, folder)."),
    split: str = typer.Option("train", "--split", help="Split to make maps for."),
    out: Path = typer.Option(..., "--out", help="Output folder of class maps <id>.npz."),
    scales: str | None = typer.Option(None, "--scales", help=_SCALES_HELP),
    classes: str = typer.Option(
        "gt", "--classes", help="gt (labelled classes) or predicted (unlabelled images)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", "--batch", min=1, help=_BATCH_HELP),
    workers: int = typer.Option(2, "--workers", min=0, help="Image-decoding processes."),
    device: str | None = typer.Option(None, "--device", help=_DEVICE_HELP),
    sets: list[str] = set_option("maps.scales=[1.0,0.5]"),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="float16 autocast on CUDA."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    restart: bool = typer.Option(False, "--restart", help=_RESTART_HELP),
    max_input_megapixels: float | None = typer.Option(
        None, "--max-input-megapixels", help=_MPX_HELP
    ),
) -> None:
    """Write multi-scale, flip-augmented CAMs, one <id>.npz per image (= wsss maps --method cam).

    Example: wsss cams --checkpoint runs/cam/checkpoints/last.safetensors --data VOC2012
    --split train --out runs/cam/maps/cam

    Resumes an interrupted run; a rerun with other settings is refused (see --restart).
    Multi-GPU: launch the same command with torchrun; rank r takes every world-th image.
    """
    run_maps_command(
        "cam",
        checkpoint=checkpoint,
        data=data,
        format=format,
        split=split,
        out=out,
        options={},
        scales=scales,
        classes=classes,
        batch_size=batch_size,
        workers=workers,
        device=device,
        sets=sets,
        amp=amp,
        progress=progress,
        restart=restart,
        max_input_megapixels=max_input_megapixels,
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("maps")(maps)
    app.command("cams")(cams)
