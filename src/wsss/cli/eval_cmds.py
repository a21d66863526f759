"""CLI commands: ``wsss eval``."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer
import yaml

from wsss.cli.options import (
    DatasetFormat,
    check_output_file,
    set_option,
    settings,
    workers_option,
)
from wsss.errors import ConfigError, WsssError


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


EVAL_HELP = (
    "Evaluate class maps or masks of a split against its ground truth (mIoU, FP, FN, P, R).\n\n"
    "Class maps become seed masks at the fixed background threshold (--threshold, default "
    "0.3); --sweep also tries a grid of thresholds and reports the best one, an oracle number "
    "since it is chosen on the ground truth.\n\n"
    "Example:\n\n"
    "  wsss eval --data VOC2012 --split train --maps runs/cam/maps --sweep --out res.json"
)


def eval_command(
    data: Path = typer.Option(..., "--data", help="Dataset root."),
    format: DatasetFormat = typer.Option(DatasetFormat.voc, "--format", help="Dataset format."),
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
        help="Background threshold in [0, 1] for class maps (sets eval.threshold; default 0.3); "
        "with --sweep it is reported beside the oracle.",
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
    sets: list[str] = set_option("eval.thresholds=[0.1,0.2,0.3]"),
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
    workers: int = workers_option(0, "reading maps and masks"),
) -> None:
    from wsss.config.sections import EvalSection, check_threshold
    from wsss.data.datasets import build_dataset
    from wsss.evaluate import evaluate, parse_thresholds, print_result, save_threshold_curve

    if (maps is None) == (masks is None):
        raise ConfigError("give exactly one of --maps DIR (class maps) or --masks DIR (masks)")
    if masks is not None and maps_format is not MapsFormat.wsss:
        raise ConfigError("--maps-format applies to class maps (--maps), not to --masks")
    if masks is not None and (sweep or threshold is not None or thresholds is not None):
        raise ConfigError(
            "--threshold/--sweep/--thresholds apply to class maps (--maps), not to --masks"
        )
    if threshold is not None:
        check_threshold(threshold, "--threshold")
    grid = parse_thresholds(thresholds).tolist() if thresholds is not None else None
    settings_ = settings(
        EvalSection, sets, {"threshold": threshold, "thresholds": grid}, section="eval"
    )
    sweep = sweep or settings_.thresholds is not None
    user_groups = _read_groups(group_file) if group_file is not None else None
    if out is not None:
        check_output_file(out, "--out")

    dataset = build_dataset(format.value, data, split)
    result = evaluate(
        dataset,
        maps_dir=maps,
        masks_dir=masks,
        threshold=settings_.threshold,
        sweep=sweep,
        thresholds=settings_.thresholds,
        num_workers=workers,
        groups=user_groups or groups,
        ignore_as_background=ignore_as_background,
        maps_format=maps_format.value,
    )
    print_result(result)
    if out is not None:
        _save(result, out, sweep, save_threshold_curve)
    elif sweep:
        typer.echo("no --out given: threshold curve not saved")


def _save(result: dict, out: Path, sweep: bool, save_curve) -> None:
    """Write the result (and its sweep curve); if that fails, print it rather than lose it."""
    from wsss.io.atomic import atomic_write_json

    try:
        atomic_write_json(out, result)
    except OSError as e:
        typer.echo(json.dumps(result, indent=2))
        raise WsssError(
            f"--out {out}: cannot write the result ({e.strerror or e}); it is printed above as JSON"
        ) from e
    typer.echo(f"wrote {out}")
    if sweep:
        curve = out.with_name(f"{out.stem}_curve.png")
        try:
            save_curve(result, curve)
        except OSError as e:
            raise WsssError(
                f"{curve}: cannot write the threshold curve ({e.strerror or e}); the result is "
                f"in {out}"
            ) from e
        typer.echo(f"wrote {curve}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("eval", help=EVAL_HELP)(eval_command)
