"""CLI commands: ``wsss train``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from wsss.errors import ConfigError

console = Console()
err_console = Console(stderr=True)


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
    out: Path = typer.Option(
        None, "--out", "-o", help="Run directory (default: runs/PRESET, named after --config)."
    ),
    strategy: str = typer.Option(
        None, "--strategy", help="Training strategy (sets train.strategy)."
    ),
    oc: Path = typer.Option(
        None, "--oc", help="Ordinary-classifier checkpoint (sets train.strategy_args.oc)."
    ),
    sets: list[str] = typer.Option(None, "--set", help="KEY=VALUE override (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    progress: bool = typer.Option(
        True,
        "--progress/--no-progress",
        help="Progress bars on a terminal; --no-progress (or a non-terminal stderr) prints a "
        "plain line every train.log_every steps and at each validation.",
    ),
) -> None:
    """Train a model and write checkpoints and metrics into a run directory.

    What is trained is the task train.task: by default cam, a CAM classifier trained with the
    strategy train.strategy (vanilla, puzzle, occse, poc, pnoc).

    Multi-GPU: launch the same command with torchrun, e.g.
    torchrun --nproc_per_node 4 -m wsss train --config voc12-cam --data VOC2012
    """
    from wsss.config import list_presets, load_config
    from wsss.train.engine import TrainingInterrupted
    from wsss.train.engine import train as run_training
    from wsss.train.tasks import STRATEGIES, resolve_task

    items = [*(overrides or []), *(sets or [])]
    if data is not None:
        items.append(f"data.root={data}")
    if strategy is not None:
        items.append(f"train.strategy={strategy}")
    if oc is not None:
        items.append(f"train.strategy_args.oc={oc}")
    if config is None:
        if not (resume and out is not None and (out / "config.yaml").is_file()):
            raise ConfigError(
                "--config is required (a YAML file or a preset: "
                + ", ".join(list_presets())
                + "); with --resume, --out RUN_DIR reuses its config.yaml"
            )
        config = str(out / "config.yaml")
    cfg = load_config(config, items)
    if cfg.train.task == "cam" and cfg.train.strategy not in STRATEGIES:
        raise ConfigError(
            f"train.strategy: unknown strategy {cfg.train.strategy!r}; known: "
            + ", ".join(STRATEGIES.names())
        )
    resolve_task(cfg)  # an unknown task fails before any data is read
    if out is None:
        out = Path("runs") / Path(config).stem
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
    app.command("train", no_args_is_help=False)(train)
