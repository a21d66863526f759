"""CLI commands: ``wsss eval``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
import yaml

from wsss.errors import ConfigError


def _read_groups(path: Path) -> dict[str, list[str]]:
    """User class groups from a YAML/JSON file mapping group name → list of class names."""
    if not path.is_file():
        raise ConfigError(f"{path}: class-group file not found")
    try:
        groups = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: unreadable class-group file ({e})") from e
    if not isinstance(groups, dict) or not all(
        isinstance(v, list) and all(isinstance(c, str) for c in v) for v in groups.values()
    ):
        raise ConfigError(f"{path}: expected a mapping of group name → list of class names")
    return {str(k): v for k, v in groups.items()}


class MapsFormat(str, Enum):
    """Formats of class-map files (see wsss.evaluate.foreign)."""

    wsss = "wsss"
    irn = "irn"
    puzzle = "puzzle"


def eval_command(
    data: Path = typer.Option(..., "--data", help="Dataset root."),
    format: str = typer.Option("voc", "--format", help="Dataset format (voc, coco, folder)."),
    split: str = typer.Option(..., "--split", help="Split with ground-truth masks."),
    maps: Path | None = typer.Option(None, "--maps", help="Folder of class maps <id>.npz."),
    masks: Path | None = typer.Option(None, "--masks", help="Folder of predicted masks <id>.png."),
    maps_format: MapsFormat = typer.Option(
        MapsFormat.wsss,
        "--maps-format",
        help="Format of the --maps files: wsss (<id>.npz), irn (<id>.npy of IRN and LPCAM: "
        "keys, cam, high_res) or puzzle (<id>.npy of Puzzle-CAM and P-NOC: keys, cam, hr_cam). "
        "A .npy of a dict is a pickle: it is read with an unpickler that only rebuilds arrays "
        "and tensors, and anything else is refused.",
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Fixed background threshold for class maps (default 0.3); with --sweep it is "
        "reported beside the oracle.",
    ),
    sweep: bool = typer.Option(
        False,
        "--sweep",
        help="Also try every threshold of the grid and report the best (an oracle number).",
    ),
    thresholds: str | None = typer.Option(
        None,
        "--thresholds",
        help="Sweep grid, START:STOP:STEP or a comma list (default 0.05:0.80:0.05, the "
        "P-NOC code's); implies --sweep.",
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the result as JSON here."),
    groups: bool = typer.Option(False, "--groups", help="Add the class-group analysis."),
    group_file: Path | None = typer.Option(
        None,
        "--group-file",
        help="YAML/JSON mapping group name to a list of classes; implies --groups.",
    ),
    ignore_as_background: bool = typer.Option(
        False, "--ignore-as-background", help="Count 255 in predicted masks as background."
    ),
    workers: int = typer.Option(0, "--workers", min=0, help="Worker processes (0: none)."),
) -> None:
    """Evaluate class maps or masks of a split against its ground truth (mIoU, FP, FN, P, R).

    With --sweep, the result at the fixed --threshold is shown and stored beside the oracle.
    """
    from wsss.data.datasets import build_dataset
    from wsss.evaluate import evaluate, parse_thresholds, print_result, save_threshold_curve
    from wsss.io.atomic import atomic_write_json

    if (maps is None) == (masks is None):
        raise ConfigError("give exactly one of --maps DIR (class maps) or --masks DIR (masks)")
    if masks is not None and maps_format is not MapsFormat.wsss:
        raise ConfigError("--maps-format applies to class maps (--maps), not to --masks")
    if masks is not None and (sweep or threshold is not None or thresholds is not None):
        raise ConfigError(
            "--threshold/--sweep/--thresholds apply to class maps (--maps), not to --masks"
        )
    grid = parse_thresholds(thresholds) if thresholds is not None else None
    sweep = sweep or grid is not None
    user_groups = _read_groups(group_file) if group_file is not None else None

    dataset = build_dataset(format, data, split)
    result = evaluate(
        dataset,
        maps_dir=maps,
        masks_dir=masks,
        threshold=0.3 if threshold is None else threshold,
        sweep=sweep,
        thresholds=grid,
        num_workers=workers,
        groups=user_groups or groups,
        ignore_as_background=ignore_as_background,
        maps_format=maps_format.value,
    )
    print_result(result)
    if out is not None:
        atomic_write_json(out, result)
        typer.echo(f"wrote {out}")
        if sweep:
            curve = out.with_name(f"{out.stem}_curve.png")
            save_threshold_curve(result, curve)
            typer.echo(f"wrote {curve}")
    elif sweep:
        typer.echo("no --out given: threshold curve not saved")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("eval")(eval_command)
