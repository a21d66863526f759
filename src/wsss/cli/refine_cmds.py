"""CLI commands of the refinement: ``wsss masks``, ``wsss affinity``, ``wsss random-walk``.

The boundary network between the last two is a training task: ``wsss train --task boundary``.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from wsss.cli.options import DatasetFormat, check_output_file, workers_option
from wsss.errors import ConfigError


class AffinityPreset(str, Enum):
    """Threshold pairs of the conventional affinity labels (wsss.refine.affinity)."""

    irn = "irn"
    lpcam = "lpcam"


def _dataset(format: DatasetFormat, data: Path, split: str):
    from wsss.data.datasets import build_dataset

    return build_dataset(format.value, data, split)


def _has_ground_truth(dataset) -> bool:
    return len(dataset) > 0 and dataset.load_mask(dataset.ids[0]) is not None


def _maps_folder(path: Path, option: str):
    from wsss.io.maps import MapStore

    if not path.is_dir():
        raise ConfigError(f"{option} {path}: not a folder of class maps")
    return MapStore(path)


def _save_json(result: dict, path: Path | None) -> None:
    if path is None:
        return
    from wsss.io.atomic import atomic_write_json

    atomic_write_json(path, result)
    typer.echo(f"wrote {path}")


def masks(
    data: Path = typer.Option(..., "--data", help="Dataset root."),
    format: DatasetFormat = typer.Option(DatasetFormat.voc, "--format", help="Dataset format."),
    split: str = typer.Option("train", "--split", help="Split to make masks for."),
    maps: Path = typer.Option(..., "--maps", help="Folder of class maps <id>.npz."),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Constant background score (the seed threshold, e.g. 0.3)."
    ),
    saliency: Path | None = typer.Option(
        None, "--saliency", help="Folder of saliency maps: background = 1 − saliency."
    ),
    saliency_threshold: float | None = typer.Option(
        None, "--saliency-threshold", help="With --saliency: background = saliency < T (0/1)."
    ),
    crf: bool = typer.Option(
        False, "--crf/--no-crf", help="Refine each mask by the label CRF (preset seeds)."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder of palette PNGs <id>.png."),
    restart: bool = typer.Option(False, "--restart", help="Redo a folder made otherwise."),
    workers: int = workers_option(0, "running the CRF"),
) -> None:
    """Turn a folder of class maps into seed masks (palette PNGs, VOC colours).

    Each mask is the argmax of [background, maps of the labelled classes] (ties go to the
    background): the background is --threshold, or 1 − saliency with --saliency. Images
    without a foreground label are all background. `wsss eval --masks` on the result gives
    the numbers of `wsss eval --maps` at the same threshold. Rerunning resumes.

    Example:

      wsss masks --data VOC2012 --split train --maps runs/cam/maps --threshold 0.3 --out seeds
    """
    from wsss.config.sections import check_threshold
    from wsss.io.masks import MaskStore
    from wsss.refine.folders import make_pseudo_masks
    from wsss.refine.walk import claim_mask_folder, finish_mask_folder

    if (threshold is None) == (saliency is None):
        raise ConfigError("give exactly one of --threshold T or --saliency DIR (the background)")
    if threshold is not None:
        check_threshold(threshold, "--threshold")
    if saliency_threshold is not None and saliency is None:
        raise ConfigError("--saliency-threshold needs --saliency DIR")
    seeds = _maps_folder(maps, "--maps")
    background = float(threshold) if threshold is not None else _maps_folder(saliency, "--saliency")
    dataset = _dataset(format, data, split)
    store = MaskStore(out)
    record = {
        "kind": "seeds",
        "maps": str(maps.resolve()),
        "split": split,
        "background": threshold if threshold is not None else str(saliency.resolve()),
        "saliency_threshold": saliency_threshold,
        "crf": "seeds" if crf else None,
    }
    claim_mask_folder(store, record, restart)
    run = make_pseudo_masks(
        dataset,
        seeds,
        store,
        background=background,
        saliency_threshold=saliency_threshold,
        crf="seeds" if crf else None,
        workers=workers,
    )
    finish_mask_folder(store, dataset.ids)
    typer.echo(f"{run.written} masks written, {run.skipped} already there, in {out}")


def affinity(
    data: Path = typer.Option(..., "--data", help="Dataset root."),
    format: DatasetFormat = typer.Option(DatasetFormat.voc, "--format", help="Dataset format."),
    split: str = typer.Option("train", "--split", help="Split to make labels for."),
    maps: Path = typer.Option(..., "--maps", help="Folder of class maps <id>.npz (any method)."),
    saliency: Path | None = typer.Option(
        None, "--saliency", help="Folder of saliency maps: saliency-aware labels (P-NOC §5)."
    ),
    preset: AffinityPreset = typer.Option(
        AffinityPreset.irn,
        "--preset",
        help="Thresholds of the conventional labels: irn (0.30, 0.05) or lpcam (0.45, 0.25).",
    ),
    high: float | None = typer.Option(None, "--high", help="Foreground threshold (overrides)."),
    low: float | None = typer.Option(None, "--low", help="Background threshold (overrides)."),
    fg_threshold: float = typer.Option(
        0.4, "--fg-threshold", help="With --saliency: class-map score inside the salient region."
    ),
    bg_threshold: float = typer.Option(
        0.1, "--bg-threshold", help="With --saliency: saliency above which a pixel is salient."
    ),
    crf: bool = typer.Option(
        True, "--crf/--no-crf", help="Label CRF on each threshold result (the reference: on)."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder of label PNGs (255 = unsure)."),
    scores: Path | None = typer.Option(
        None, "--scores", help="Write the evaluation against the ground truth here (JSON)."
    ),
    restart: bool = typer.Option(False, "--restart", help="Redo a folder made otherwise."),
    workers: int = workers_option(0, "running the CRF"),
) -> None:
    """Make affinity labels (the boundary network's training targets) from class maps.

    Conventional (IRN): the class of the CRF-refined seeds at --high where there is one; 0
    where the seeds at --low say background too; 255 (unsure) in between. With --saliency:
    P-NOC's saliency-aware labels. Where the split has ground truth, prints the precision of
    the confident pixels, the share of unsure pixels and the seed metrics over confident
    pixels. Rerunning resumes.

    Example:

      wsss affinity --data VOC2012 --split train_aug --maps runs/cam/maps --out runs/affinity
    """
    from wsss.evaluate.confident import evaluate_confident
    from wsss.io.masks import MaskStore
    from wsss.refine.affinity import preset_thresholds
    from wsss.refine.folders import make_affinity_labels
    from wsss.refine.walk import claim_mask_folder, finish_mask_folder

    if scores is not None:
        check_output_file(scores, "--scores")
    pair = list(preset_thresholds(preset.value))
    pair = [pair[0] if high is None else high, pair[1] if low is None else low]
    if not 0 <= pair[1] <= pair[0] <= 1:
        raise ConfigError(f"affinity thresholds need 0 <= --low <= --high <= 1, got {pair[::-1]}")
    seeds = _maps_folder(maps, "--maps")
    sal = None if saliency is None else _maps_folder(saliency, "--saliency")
    dataset = _dataset(format, data, split)
    store = MaskStore(out)
    record = {
        "kind": "affinity",
        "maps": str(maps.resolve()),
        "split": split,
        "saliency": None if saliency is None else str(saliency.resolve()),
        "thresholds": pair if saliency is None else [fg_threshold, bg_threshold],
        "crf": "seeds" if crf else None,
    }
    claim_mask_folder(store, record, restart)
    run = make_affinity_labels(
        dataset,
        seeds,
        store,
        thresholds=pair,
        saliency=sal,
        fg_threshold=fg_threshold,
        bg_threshold=bg_threshold,
        crf="seeds" if crf else None,
        workers=workers,
    )
    finish_mask_folder(store, dataset.ids)
    typer.echo(f"{run.written} label maps written, {run.skipped} already there, in {out}")
    if _has_ground_truth(dataset):
        result = evaluate_confident(dataset, out)
        typer.echo(
            f"confident pixels right {_fmt(result['pixel_precision'])}%  (foreground "
            f"{_fmt(result['fg_precision'])}%, background {_fmt(result['bg_precision'])}%), "
            f"unsure {_fmt(result['ignored'])}%, mIoU over confident pixels "
            f"{_fmt(result['miou'])}"
        )
        _save_json(result, scores)
    elif scores is not None:
        raise ConfigError(f"--scores: split {split!r} has no ground truth to score against")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def random_walk(
    data: Path = typer.Option(..., "--data", help="Dataset root."),
    format: DatasetFormat = typer.Option(DatasetFormat.voc, "--format", help="Dataset format."),
    split: str = typer.Option("train", "--split", help="Split to make pseudo masks for."),
    maps: Path = typer.Option(..., "--maps", help="Seeds: folder of class maps <id>.npz."),
    boundary: Path = typer.Option(
        ..., "--boundary", help="Boundary network checkpoint (wsss train --task boundary)."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder of pseudo masks <id>.png."),
    background: str = typer.Option(
        "irn",
        "--background",
        help="Constant background score after the walk: irn (0.25), pnoc (0.30), lpcam (0.35) "
        "or a number.",
    ),
    saliency: Path | None = typer.Option(
        None, "--saliency", help="Background from saliency maps (1 − saliency) instead."
    ),
    saliency_threshold: float | None = typer.Option(
        None, "--saliency-threshold", help="With --saliency: background = saliency < T (0/1)."
    ),
    crf: bool = typer.Option(
        False, "--crf/--no-crf", help="Label CRF on each mask (P-NOC's: 1 iteration, gt_prob 0.9)."
    ),
    radius: int = typer.Option(5, "--radius", min=2, help="Walk radius on the stride-4 grid."),
    beta: float = typer.Option(10.0, "--beta", help="Exponent of the affinities."),
    exp_times: int = typer.Option(8, "--exp-times", min=0, help="The walk takes 2^N steps."),
    pad_to: int = typer.Option(
        512, "--pad-to", min=0, help="Pad images to this size for the boundary map (0: none)."
    ),
    batch_size: int = typer.Option(
        16, "--batch-size", min=1, help="Images walked together (faster; same result)."
    ),
    maps_out: Path | None = typer.Option(
        None, "--maps-out", help="Also store the walked class maps here (to sweep thresholds)."
    ),
    scores: Path | None = typer.Option(
        None, "--scores", help="Write the evaluation against the ground truth here (JSON)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:i]."),
    restart: bool = typer.Option(False, "--restart", help="Redo a folder made otherwise."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """Random-walk pseudo masks: the boundary network's affinities propagate the seeds.

    Every labelled image gets a mask (all background without a foreground label). Where the
    split has ground truth, the masks are evaluated. Resumes an interrupted run; multi-GPU:
    the same command under torchrun (rank r takes every world-th image).

    Example:

      wsss random-walk --data VOC2012 --split train --maps runs/cam/maps \\
        --boundary runs/boundary --out runs/rw --background irn
    """
    from wsss.evaluate import evaluate
    from wsss.io.maps import MapStore
    from wsss.io.masks import MaskStore
    from wsss.models import load_model
    from wsss.models.boundary import BoundaryNet
    from wsss.refine.walk import run_random_walk, rw_background
    from wsss.runtime import distributed, resolve_device

    if scores is not None:
        check_output_file(scores, "--scores")
    if saliency_threshold is not None and saliency is None:
        raise ConfigError("--saliency-threshold needs --saliency DIR")
    bg = _maps_folder(saliency, "--saliency") if saliency is not None else background
    if not isinstance(bg, MapStore):
        rw_background(bg)  # a bad value fails before the network loads
    seeds = _maps_folder(maps, "--maps")
    info = distributed.init_distributed()
    try:
        try:
            target = resolve_device(device, info.local_rank)
        except RuntimeError as e:
            raise ConfigError(f"--device {device!r}: {e}") from None
        dataset = _dataset(format, data, split)
        model, _ = load_model(boundary, map_location=target)
        if not isinstance(model, BoundaryNet):
            raise ConfigError(
                f"--boundary {boundary}: a {type(model).__name__} checkpoint, not a boundary "
                f"network (train one with wsss train --task boundary)"
            )
        run = run_random_walk(
            dataset,
            seeds,
            model,
            MaskStore(out),
            background=bg if isinstance(bg, MapStore) else background,
            saliency_threshold=saliency_threshold,
            crf="rw" if crf else None,
            radius=radius,
            beta=beta,
            exp_times=exp_times,
            pad_to=pad_to or None,
            device=target,
            batch_size=batch_size,
            maps_out=None if maps_out is None else MapStore(maps_out),
            restart=restart,
            record={"boundary": str(boundary.resolve())},
            progress=progress,
        )
    finally:
        distributed.cleanup()
    if not info.is_main:
        return
    typer.echo(
        f"{run.written} pseudo masks written, {run.skipped} already there, in {out} "
        f"({run.seconds:.1f} s)"
    )
    if _has_ground_truth(dataset):
        result = evaluate(dataset, masks_dir=out, progress=False)
        typer.echo(
            f"mIoU {_fmt(result['miou'])}  FP {_fmt(result['fp'])}  FN {_fmt(result['fn'])}  "
            f"precision {_fmt(result['precision'])}  recall {_fmt(result['recall'])}"
        )
        _save_json(result, scores)
    elif scores is not None:
        raise ConfigError(f"--scores: split {split!r} has no ground truth to score against")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("masks")(masks)
    app.command("affinity")(affinity)
    app.command("random-walk")(random_walk)
