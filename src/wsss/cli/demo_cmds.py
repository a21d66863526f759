"""CLI commands: ``wsss demo`` (the whole pipeline on the synthetic benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from wsss.cli.options import Strategy, escape, set_option
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
        threshold = result.get("threshold")  # none for affinity labels (two thresholds)
        table.add_row(
            escape(method),
            "–" if threshold is None else f"{threshold:g}",
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
            share = f"{100 * r.seconds / max(total, 1e-9):.0f}%"
            table.add_row(escape(r.name), f"{r.seconds:.1f}", share)
        else:
            skipped = f"[dim]skipped ({r.recorded_seconds:.1f} earlier)[/]"
            table.add_row(escape(r.name), skipped, "")
    return table


DemoStrategy = Strategy  # ``run.strategy``: any training strategy


def demo(
    overrides: list[str] = typer.Argument(
        None,
        metavar="KEY=VALUE...",
        help="Settings, as with --set: synth.* (benchmark), train.*/model.*/data.* "
        "(classifier), maps.*, lpcam.*, eval.*, saliency.*, report.*, demo.* "
        "(e.g. maps.scales=[1.0,0.5]).",
    ),
    sets: list[str] = set_option("train.epochs=4"),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Run directory (default runs/demo; runs/strategies-synth with --compare).",
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Synthetic benchmark folder (sets data.root; default <out>/data); made if absent.",
    ),
    strategy: DemoStrategy | None = typer.Option(
        None,
        "--strategy",
        help="Sets run.strategy: vanilla, or also a classifier with this strategy (OC-CSE, P-OC "
        "and P-NOC train against the vanilla one as their ordinary classifier; a P-NOC step "
        "costs about 4x a vanilla one).",
    ),
    lpcam: bool | None = typer.Option(
        None, "--lpcam/--no-lpcam", help="Also run LPCAM and LPCAM-F (sets run.lpcam)."
    ),
    ccam: bool | None = typer.Option(
        None,
        "--ccam/--no-ccam",
        help="Also run C²AM and C²AM-H saliency, pseudo-saliency and CAM seeds with a saliency "
        "background (sets run.ccam).",
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu or cuda[:i] (sets train.device and maps.device)."
    ),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="Pipeline preset or YAML file (default demo; demo-compare with --compare).",
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
    from wsss.pipeline.demo import demo_config, run_demo
    from wsss.runtime import distributed

    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough for the summary table
        console = Console(width=max(console.width, 120))
    if runs is not None and not compare:
        raise ConfigError("--runs selects runs of the comparison: add --compare")
    items = [*(overrides or []), *(sets or [])]
    main = distributed.init_distributed().is_main
    try:
        if compare:
            _compare(console, items, out, data, preset, runs, device, progress, main)
            return
        out = out or Path("runs/demo")
        config = demo_config(
            items,
            preset=preset or "demo",
            strategy=None if strategy is None else strategy.value,
            lpcam=lpcam,
            ccam=ccam,
            device=device,
            data=data,
        )
        if main:
            console.print(f"[bold]wsss demo[/] → {escape(str(out))}")
        started, finished = _stage_printers(console)
        result = run_demo(out, config, on_stage=finished, on_start=started, progress=progress)
    finally:
        distributed.cleanup()
    if main:
        print_run_summary(console, result)


def print_run_summary(console: Console, result: Any) -> None:
    """The results and timings tables of a finished run, and where its files are."""
    console.print()
    console.print(summary_table(result.results))
    console.print(timings_table(result.stages, result.seconds))
    console.print(f"report: {escape(str(result.run.report_path))}")
    console.print(f"results: {escape(str(result.run.results_path))}")


def _stage_printers(console: Console):
    def started(stage, reason: str) -> None:
        console.rule(f"[bold]{escape(stage.name)}")
        console.print(f"[dim]why: {escape(reason)}[/]")

    def finished(report) -> None:
        if report.status == "ran":
            console.print(f"[green]✓[/] {escape(report.name)} ({report.seconds:.1f} s)")
        else:
            console.print(f"[dim]↷ {escape(report.name)}: complete, skipped[/]")

    return started, finished


def _compare(
    console: Console,
    overrides: list[str],
    out: Path | None,
    data: Path | None,
    preset: str | None,
    runs: str | None,
    device: str | None,
    progress: bool,
    main: bool,
) -> None:
    from wsss.pipeline.compare import comparison_config, run_comparison

    out = out or Path("runs/strategies-synth")
    names = None if runs is None else [n.strip() for n in runs.split(",") if n.strip()]
    settings = comparison_config(overrides, preset=preset or "demo-compare", device=device)
    if main:
        console.print(f"[bold]wsss demo --compare[/] → {escape(str(out))}")
    started, finished = _stage_printers(console)
    result = run_comparison(
        out, data, names, settings, on_stage=finished, on_start=started, progress=progress
    )
    if not main:
        return
    console.print()
    results = result.run.results()
    console.print(summary_table({n: results[n] for n in result.names}))
    console.print(timings_table(result.stages, result.seconds))
    console.print(f"table: {escape(str(result.run.path / 'table.md'))}")
    console.print(f"report: {escape(str(result.run.report_path))}")


DEMO_HELP = (
    "Run the whole pipeline on the synthetic benchmark and write an HTML report.\n\n"
    "Generates the data if absent, trains a small classifier from scratch, extracts CAMs "
    "(and LPCAM maps), evaluates seed masks at the fixed threshold 0.3 and over a threshold "
    "sweep (oracle), refines the CAM and LPCAM seeds into random-walk pseudo masks (affinity "
    "labels, one boundary network each; refine.methods=[] skips it), then writes results.json "
    "and report.html into the run directory.\n\n"
    "Rerun the same command to resume an interrupted demo: complete stages are skipped, and a "
    "stage that runs again says why (a changed setting, an upstream stage, a missing output). "
    "Settings are the sections of the pipeline configuration (preset demo).\n\n"
    "With --compare, trains and evaluates every training strategy of the P-NOC paper with one "
    "budget (preset demo-compare) into runs/strategies-synth (table.md, report.html).\n\n"
    "Example:\n\n"
    "  wsss demo --out runs/demo --set train.epochs=4 --set lpcam.k=8\n\n"
    "Under torchrun the same command trains with DDP and shards the maps over the processes."
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("demo", help=DEMO_HELP)(demo)
