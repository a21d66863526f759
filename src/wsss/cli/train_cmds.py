"""CLI commands: ``wsss train``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from wsss.cli.options import (
    DatasetFormat,
    Strategy,
    TaskName,
    escape,
    set_option,
    workers_option,
)
from wsss.errors import ConfigError

console = Console()


err_console = Console(stderr=True)

TRAIN_HELP = (
    "Train a model and write checkpoints and metrics into a run directory: by default a CAM "
    "classifier (train.task=cam); --task segmentation trains a segmentation network on masks, "
    "--task ccam C²AM (C²AM-H with --hints), --task saliency_detector a saliency detector on "
    "--masks.\n\n"
    "Settings come from --config (a preset or YAML file), then the dedicated options, then "
    "KEY=VALUE overrides and --set items (the last wins). Rerun with --resume to continue an "
    "interrupted run.\n\n"
    "Example:\n\n"
    "  wsss train --config synth-demo --data data/synth --out runs/cam --set train.epochs=4\n\n"
    "  wsss train --config synth-segmentation --data data/synth --masks runs/demo/pseudo "
    "--out runs/seg\n\n"
    "Multi-GPU: the same command under torchrun, e.g. "
    "torchrun --nproc_per_node 4 -m wsss train --config voc12-cam --data VOC2012"
)


def train(
    overrides: list[str] = typer.Argument(
        None,
        metavar="KEY=VALUE...",
        help="Config overrides, e.g. train.lr=0.01 train.epochs=3 model.backbone=resnet50",
    ),
    config: str = typer.Option(
        None,
        "--config",
        "-c",
        help="Preset name (e.g. synth-demo, voc12-cam) or YAML file. With --resume, defaults "
        "to the run directory's config.yaml.",
    ),
    data: Path = typer.Option(None, "--data", help="Dataset root (sets data.root)."),
    format: DatasetFormat | None = typer.Option(
        None, "--format", help="Dataset format (sets data.format; default from the config)."
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Run directory (default: runs/PRESET, named after --config)."
    ),
    task: TaskName | None = typer.Option(
        None, "--task", help="What is trained (sets train.task; default from the config)."
    ),
    strategy: Strategy | None = typer.Option(
        None, "--strategy", help="Training strategy of the cam task (sets train.strategy)."
    ),
    masks: Path = typer.Option(
        None,
        "--masks",
        help="Folder of training masks <id>.png for --task segmentation (default: the "
        "split's ground truth) or of pseudo-saliency PNGs for --task saliency_detector (sets "
        "train.strategy_args.masks).",
    ),
    oc: Path = typer.Option(
        None, "--oc", help="Ordinary-classifier checkpoint (sets train.strategy_args.oc)."
    ),
    hints: Path | None = typer.Option(
        None,
        "--hints",
        help="C²AM-H: class-map folder of the training split (sets train.strategy_args.hints).",
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu or cuda[:i] (sets train.device)."
    ),
    workers: int | None = workers_option(None, "loading training images", "train.num_workers"),
    sets: list[str] = set_option("train.epochs=4"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    progress: bool = typer.Option(
        True,
        "--progress/--no-progress",
        help="Progress bars on a terminal; --no-progress (or a non-terminal stderr) prints a "
        "plain line every train.log_every steps and at each validation.",
    ),
) -> None:
    from wsss.config import list_presets, load_config
    from wsss.train.engine import TrainingInterrupted
    from wsss.train.engine import train as run_training
    from wsss.train.tasks import STRATEGIES, resolve_task

    shortcuts = {
        "data.root": None if data is None else str(data),
        "data.format": None if format is None else format.value,
        "train.task": None if task is None else task.value,
        "train.strategy": None if strategy is None else strategy.value,
        "train.strategy_args.masks": None if masks is None else str(masks),
        "train.strategy_args.oc": None if oc is None else str(oc),
        "train.strategy_args.hints": None if hints is None else str(hints),
        "train.device": device,
        "train.num_workers": workers,
    }
    items = [(k, v) for k, v in shortcuts.items() if v is not None]
    items += [*(overrides or []), *(sets or [])]
    if config is None:
        if not (resume and out is not None and (out / "config.yaml").is_file()):
            raise ConfigError(
                "--config is required (a YAML file or a preset: "
                + ", ".join(list_presets())
                + "); with --resume, --out RUN_DIR reuses its config.yaml"
            )
        config = str(out / "config.yaml")
    cfg = load_config(config, items)
    if masks is not None and cfg.train.task not in ("segmentation", "saliency_detector"):
        raise ConfigError(
            f"--masks trains a segmentation network (or a saliency detector) on masks, but "
            f"train.task is {cfg.train.task!r}; add --task segmentation (or use a segmentation "
            f"preset)"
        )
    if cfg.train.task == "cam" and cfg.train.strategy not in STRATEGIES:
        raise ConfigError(
            f"train.strategy: unknown strategy {cfg.train.strategy!r}; known: "
            + ", ".join(STRATEGIES.names())
        )
    resolve_task(cfg)  # an unknown task fails before any data is read
    if out is None:
        out = Path("runs") / Path(config).stem
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a run directory; choose another --out")
    if not resume and (out / "checkpoints" / "state.json").is_file():
        raise ConfigError(
            f"{out} already holds a training run; resume it with: wsss train --out {out} "
            f"--resume (or choose another --out)"
        )
    from wsss.runtime import distributed

    try:
        weights = run_training(cfg, out, resume=resume, progress=progress)
        is_main = distributed.dist_info().is_main
    except TrainingInterrupted as e:
        # typer would turn the interrupt into a bare "Aborted!": say how to resume instead.
        err_console.print(f"[yellow]interrupted[/]: {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(130) from None
    finally:
        distributed.cleanup()
    if is_main:
        meta = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
        what = cfg.train.strategy if cfg.train.task == "cam" else cfg.train.task
        console.print(f"[green]trained[/] {escape(what)} → {escape(str(weights))}")
        if meta.get("metrics"):
            console.print("  " + "  ".join(f"{k} {v:.4f}" for k, v in meta["metrics"].items()))


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("train", help=TRAIN_HELP, no_args_is_help=False)(train)
