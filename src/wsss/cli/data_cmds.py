"""CLI commands: ``wsss check-data``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from wsss.data.check import CheckReport, Problem, check_data
from wsss.errors import ConfigError, WsssError
from wsss.io.atomic import atomic_write_json


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("check-data")(check_data_command)


def check_data_command(
    data: Path = typer.Option(..., "--data", help="Dataset root folder."),
    format: str = typer.Option("voc", "--format", help="Dataset format: voc, coco or folder."),
    split: str = typer.Option(
        ..., "--split", help="Split name (voc: train, val, ...; coco: train2014; folder: all)."
    ),
    workers: int = typer.Option(2, "--workers", min=1, help="Reader threads."),
    max_rows: int = typer.Option(50, "--max-rows", min=0, help="Problems listed per table."),
    out: Path | None = typer.Option(None, "--out", help="Also write the full report as JSON."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 on warnings too."),
) -> None:
    """Read every sample of a split and list every problem; exit 1 when there are any.

    Example:

      wsss check-data --data VOC2012 --split train
    """
    console = Console()
    if out is not None:
        _check_output(out)
    report = check_data(data, format, split, workers=workers)
    _print_findings(console, "Problems", report.problems, data, max_rows, "red")
    _print_findings(console, "Warnings", report.warnings, data, max_rows, "yellow")
    _print_summary(console, report)
    if out is not None:
        try:
            atomic_write_json(out, report.to_dict())
        except OSError as e:
            typer.echo(json.dumps(report.to_dict(), indent=2))  # the result is not lost
            raise WsssError(
                f"--out {out}: cannot write the report ({e}); it is printed above instead"
            ) from None
        console.print(f"report written to {escape(str(out))}")
    if report.problems or (strict and report.warnings):
        raise typer.Exit(1)


def _check_output(out: Path) -> None:
    """Refuse an output path that cannot be written before the (long) check starts."""
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name such as report.json")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the first existing ancestor, where folders would be made
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: folder {parent} is not writable")


def _print_findings(
    console: Console, title: str, findings: list[Problem], root: Path, max_rows: int, colour: str
) -> None:
    if not findings:
        return
    table = Table(title=f"{title} ({len(findings)})", title_style=f"bold {colour}")
    for column in ("id", "kind", "file", "message"):
        table.add_column(column, overflow="fold")
    for finding in findings[:max_rows]:
        # The file has its own column; drop it from the front of the message.
        message = finding.message.removeprefix(f"{finding.file}: ")
        cells = (finding.id or "-", finding.kind, _relative(finding.file, root), message)
        table.add_row(*map(escape, cells))  # user text, not markup
    console.print(table)
    if len(findings) > max_rows:
        console.print(f"... and {len(findings) - max_rows} more (--max-rows, or --out FILE.json)")


def _relative(file: str | None, root: Path) -> str:
    if file is None:
        return "-"
    try:
        return str(Path(file).relative_to(root))
    except ValueError:
        return file


def _print_summary(console: Console, report: CheckReport) -> None:
    table = Table(title=escape(f"Summary of split {report.split!r}"), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = {
        "samples": report.samples,
        "images ok": report.images_ok,
        "with mask": report.masks,
        "with parts": report.parts,
        "height range": _range(report.height_range),
        "width range": _range(report.width_range),
        "problems": _by_kind(len(report.problems), report.problems_by_kind()),
        "warnings": _by_kind(len(report.warnings), report.warnings_by_kind()),
        "images per class": ", ".join(f"{c} {n}" for c, n in report.class_counts.items()) or "-",
    }
    for name, value in rows.items():
        table.add_row(name, escape(str(value)))
    console.print(table)
    verdict = "[bold green]OK[/]" if report.ok else "[bold red]problems found[/]"
    console.print(verdict)


def _range(bounds: tuple[int, int] | None) -> str:
    return "-" if bounds is None else f"{bounds[0]}–{bounds[1]}"


def _by_kind(total: int, counts: dict[str, int]) -> str:
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{kind}: {n}" for kind, n in counts.items()) + ")"
