"""CLI commands: ``wsss demo`` (the whole pipeline on the synthetic benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from wsss.errors import ConfigError

# (results key, column heading) of the summary table
SUMMARY_COLUMNS = (
    ("miou", "mIoU"),
    ("fp", "FP"),
    ("fn", "FN"),
    ("precision", "P"),
    ("recall", "R"),
    ("head_recall", "head R"),
    ("body_recall", "body R"),
    ("context_fp", "ctx FP"),
    ("background_fp", "bg FP"),
)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def summary_table(results: dict[str, Any]) -> Table:
    """Methods × metrics at the fixed threshold, with the oracle best mIoU last."""
    table = Table(
        title="seed masks (%)",
        caption="mIoU over all classes incl. background; FP, FN, P(recision), R(ecall): "
        "means over foreground classes; oracle: threshold chosen on ground truth (an upper "
        "bound, not an honest result)",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("method")
    table.add_column("t", justify="right")
    for _, header in SUMMARY_COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("oracle mIoU@t", justify="right")
    for method, result in results.items():
        best = result.get("best")
        oracle = "–" if not best else f"{_fmt(best['miou'])}@{best['threshold']:g}"
        table.add_row(
            method,
            f"{result['threshold']:g}",
            *(_fmt(result.get(key)) for key, _ in SUMMARY_COLUMNS),
            oracle,
        )
    return table


def timings_table(reports: list, total: float) -> Table:
    """Wall time per stage of this invocation; skipped stages show the earlier time."""
    table = Table(title=f"wall time {total:.1f} s", box=box.SIMPLE_HEAD)
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for r in reports:
        if r.status == "ran":
            table.add_row(r.name, f"{r.seconds:.1f}", f"{100 * r.seconds / max(total, 1e-9):.0f}%")
        else:
            table.add_row(r.name, f"[dim]skipped ({r.recorded_seconds:.1f} earlier)[/]", "")
    return table


def demo(
    overrides: list[str] = typer.Argument(
        None,
        help="key=value settings: synth.* (benchmark), lpcam.* (prototypes), demo.* "
        "(e.g. demo.scales=[1.0,0.5]), others to the classifier config (train.epochs=4).",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Run directory (default runs/demo; runs/strategies-synth with --compare).",
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Synthetic benchmark folder (default <out>/data); made if absent."
    ),
    strategy: str = typer.Option(
        "vanilla",
        "--strategy",
        help="vanilla, or pnoc (trains vanilla first as the ordinary classifier, then P-NOC, "
        "whose steps cost about 4x a vanilla one: about 15 min instead of 5 on 2 cores).",
    ),
    lpcam: bool = typer.Option(True, "--lpcam/--no-lpcam", help="Also run LPCAM and LPCAM-F."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:i]."),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="Classifier preset or YAML (default synth-demo; synth-compare with --compare).",
    ),
    compare: bool = typer.Option(
        False,
        "--compare",
        help="Run the training-strategy comparison instead (CAM, Puzzle-CAM, OC-CSE, P-OC, "
        "P-NOC, ± label smoothing; about 1 h on 2 cores); --strategy and --lpcam are ignored.",
    ),
    runs: str | None = typer.Option(
        None,
        "--runs",
        help="With --compare: comma-separated subset of cam, puzzle, occse, poc, pnoc, poc_ls, "
        "pnoc_ls, cam_ls (default: all).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """``wsss demo``: see :data:`DEMO_HELP`; the work is :func:`wsss.pipeline.run_demo`."""
    from wsss.pipeline.demo import STRATEGIES, demo_config, run_demo

    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough for the summary table
        console = Console(width=max(console.width, 120))
    if runs is not None and not compare:
        raise ConfigError("--runs selects runs of the comparison: add --compare")
    if compare:
        _compare(console, overrides or [], out, data, preset, runs, device, progress)
        return
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    out = out or Path("runs/demo")
    config = demo_config(
        overrides or [],
        preset=preset or "synth-demo",
        strategy=strategy,
        lpcam=lpcam,
        device=device,
    )
    console.print(f"[bold]wsss demo[/] → {out}")
    started, finished = _stage_printers(console)

    result = run_demo(
        out,
        data,
        config,
        on_stage=finished,
        on_start=started,
        progress=progress,
    )
    console.print()
    console.print(summary_table(result.results))
    console.print(timings_table(result.stages, result.seconds))
    console.print(f"report: {result.run.report_path}")
    console.print(f"results: {result.run.results_path}")


def _stage_printers(console: Console):
    def started(stage) -> None:
        console.rule(f"[bold]{stage.name}")

    def finished(report) -> None:
        if report.status == "ran":
            console.print(f"[green]✓[/] {report.name} ({report.seconds:.1f} s)")
        else:
            console.print(f"[dim]↷ {report.name}: complete, skipped[/]")

    return started, finished


def _compare(
    console: Console,
    overrides: list[str],
    out: Path | None,
    data: Path | None,
    preset: str | None,
    runs: str | None,
    device: str,
    progress: bool,
) -> None:
    from wsss.pipeline.compare import comparison_config, run_comparison

    out = out or Path("runs/strategies-synth")
    names = None if runs is None else [n.strip() for n in runs.split(",") if n.strip()]
    settings = comparison_config(overrides, preset=preset or "synth-compare", device=device)
    console.print(f"[bold]wsss demo --compare[/] → {out}")
    started, finished = _stage_printers(console)
    result = run_comparison(
        out, data, names, settings, on_stage=finished, on_start=started, progress=progress
    )
    console.print()
    results = result.run.results()
    console.print(summary_table({n: results[n] for n in result.names}))
    console.print(timings_table(result.stages, result.seconds))
    console.print(f"table: {result.run.path / 'table.md'}")
    console.print(f"report: {result.run.report_path}")


DEMO_HELP = (
    "Run the whole pipeline on the synthetic benchmark and write an HTML report.\n\n"
    "Generates the data if absent, trains a small classifier from scratch, extracts CAMs "
    "(and LPCAM maps), evaluates seed masks at the fixed threshold 0.3 and over a threshold "
    "sweep (oracle), then writes results.json and report.html into the run directory.\n\n"
    "Rerun the same command to resume an interrupted demo: complete stages are skipped.\n\n"
    "With --compare, trains and evaluates every training strategy of the P-NOC paper with one "
    "budget (preset synth-compare) into runs/strategies-synth (table.md, report.html)."
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("demo", help=DEMO_HELP)(demo)
