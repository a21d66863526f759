"""CLI commands of whole runs: ``wsss run`` (a pipeline preset), ``wsss status``, ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from wsss.cli.demo_cmds import _stage_printers, print_run_summary, summary_table
from wsss.cli.options import escape, set_option


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough for the tables
        console = Console(width=max(console.width, 120))
    return console


def _existing_run(path: Path):
    """The run directory at ``path``, which must exist (a RunDir would create it)."""
    from wsss.errors import ConfigError
    from wsss.pipeline.rundir import RunDir

    if not path.is_dir():
        raise ConfigError(f"{path}: no such run directory")
    return RunDir(path)


def run(
    preset: str = typer.Argument(
        ...,
        metavar="PRESET",
        help="Pipeline preset (synth-full, voc12-pnoc, voc12-lpcam-irn, coco14-lpcam-irn) or a "
        "YAML file.",
    ),
    out: Path = typer.Option(..., "--out", help="Run directory (resumed when it exists)."),
    sets: list[str] = set_option("segmentation.train.epochs=4"),
    data: Path | None = typer.Option(
        None, "--data", help="Dataset folder (sets data.root; synthetic runs: made if absent)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu or cuda[:i] (sets train.device and maps.device)."
    ),
    force: list[str] = typer.Option(
        None, "--force", help="Rerun this stage even if complete (repeatable); later ones follow."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Only list the stages that would run, and why."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """``wsss run``: see :data:`RUN_HELP`; the work is :func:`wsss.pipeline.runner.run_pipeline`."""
    from wsss.pipeline.graph import build_pipeline, data_root
    from wsss.pipeline.rundir import RunDir
    from wsss.pipeline.runner import run_config, run_pipeline
    from wsss.runtime import distributed

    console = _console()
    shortcuts = {
        "train.device": device,
        "maps.device": device,
        "data.root": None if data is None else str(data),
    }
    config = run_config(preset, list(sets or []), shortcuts)
    if dry_run:
        existed = out.exists()
        run_dir = RunDir(out)
        try:
            pipeline = build_pipeline(run_dir, config, data_root(run_dir, config), progress=False)
            plan = pipeline.explain(run_dir, list(force or []))
        finally:
            if not existed and not any(run_dir.path.iterdir()):
                run_dir.path.rmdir()  # a plan writes nothing
        for name, why in plan:
            console.print(f"{escape(name)}: [dim]{escape(why)}[/]")
        console.print(f"{len(plan)} of {len(pipeline.names)} stages would run")
        return
    main = distributed.init_distributed().is_main
    try:
        if main:
            console.print(f"[bold]wsss run {escape(str(preset))}[/] → {escape(str(out))}")
        started, finished = _stage_printers(console)
        result = run_pipeline(
            out,
            config,
            on_stage=finished,
            on_start=started,
            progress=progress,
            force=list(force or []),
            preset=str(preset),
        )
    finally:
        distributed.cleanup()
    if main:
        print_run_summary(console, result)


def status(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="A run directory."),
) -> None:
    """``wsss status RUN``: each stage done, stale (and why) or pending."""
    from wsss.pipeline.runner import stored_pipeline

    console = _console()
    run = _existing_run(run_dir)
    pipeline, _ = stored_pipeline(run)
    why = dict(pipeline.explain(run))
    table = Table(title=f"stages of {escape(str(run_dir))}", box=box.SIMPLE_HEAD)
    for heading, justify in (("stage", "left"), ("state", "left"), ("seconds", "right")):
        table.add_column(heading, justify=justify)
    table.add_column("why", overflow="fold")
    counts = {"done": 0, "stale": 0, "pending": 0, "interrupted": 0}
    for name in pipeline.names:
        record = run.stage_record(name) or {}
        reason = why.get(name)
        if reason is None:
            state, colour = "done", "green"
        elif not record:
            state, colour = "pending", "dim"
        elif record.get("status") != "done":
            state, colour = "interrupted", "yellow"
        else:
            state, colour = "stale", "red"
        counts[state] += 1
        seconds = record.get("seconds")
        table.add_row(
            escape(name),
            f"[{colour}]{state}[/]",
            "" if seconds is None or state != "done" else f"{seconds:.1f}",
            "" if reason is None else escape(reason),
        )
    console.print(table)
    console.print(", ".join(f"{n} {state}" for state, n in counts.items() if n))
    if any(counts[s] for s in ("stale", "pending", "interrupted")):
        console.print(f"resume: [bold]{escape(_resume_line(run))}[/]", soft_wrap=True)


def _resume_line(run: Any) -> str:
    """The command that resumes ``run``: its own command line when ``wsss`` made it, else
    one that reads the settings the run recorded (``config.yaml`` holds all of them)."""
    import shlex

    argv = list(run.read_info().get("command") or [])
    if argv and (
        Path(argv[0]).name == "wsss"
        or (Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "wsss")
    ):
        return shlex.join(["wsss", *argv[1:]])
    runs = run.read_config().get("runs")
    if isinstance(runs, dict):  # a strategy comparison
        return shlex.join(
            ["wsss", "demo", "--compare", "--out", str(run.path), "--runs", ",".join(runs)]
        )
    return shlex.join(["wsss", "run", str(run.config_path), "--out", str(run.path)])


def report(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="A run directory."),
    examples: int | None = typer.Option(
        None, "--examples", min=0, help="Images in the example grid (default: the run's)."
    ),
) -> None:
    """``wsss report RUN``: render ``RUN/report.html`` again from the run's files."""
    from wsss.pipeline.runner import rebuild_report

    run = _existing_run(run_dir)
    path = rebuild_report(run, examples)
    _console().print(f"report: {escape(str(path))}")
    if run.results():
        _console().print(summary_table(run.results()))


RUN_HELP = (
    "Run a whole pipeline from one preset: data, CAM classifier (any strategy), class maps "
    "(CAM, LPCAM), saliency (C²AM, C²AM-H), refinement (affinity labels, boundary network, "
    "random walk), pseudo masks, segmentation, evaluation, report.\n\n"
    "Each stage skips when its outputs are complete and resumes when interrupted: rerun the "
    "same command. A stage that runs again says why (a changed setting, an upstream stage, a "
    "missing output).\n\n"
    "Under torchrun (torchrun --nproc_per_node N -m wsss run ...) training uses DDP and every "
    "inference stage shards its images over the processes.\n\n"
    "Examples:\n\n"
    "  wsss run synth-full --out runs/full\n\n"
    "  wsss run voc12-pnoc --data VOC2012 --out runs/voc-pnoc --set train.batch_size=16"
)
STATUS_HELP = (
    "Show each stage of a run: done, stale (and why it would run again), interrupted, or "
    "pending.\n\nExample:\n\n  wsss status runs/full"
)
REPORT_HELP = (
    "Render a run's report.html again from its files (any run of wsss run, wsss demo or "
    "wsss demo --compare).\n\nExample:\n\n  wsss report runs/full --examples 12"
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("run", help=RUN_HELP)(run)
    app.command("status", help=STATUS_HELP)(status)
    app.command("report", help=REPORT_HELP)(report)
