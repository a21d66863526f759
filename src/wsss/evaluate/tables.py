"""Rich tables of evaluation results (the dicts returned by ``evaluate``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from wsss.evaluate.parts import PART_METRICS

__all__ = ["diagnostics_table", "groups_table", "print_result", "result_table"]

COLUMNS = (("iou", "IoU"), ("fp", "FP"), ("fn", "FN"), ("precision", "Prec."), ("recall", "Rec."))


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def result_table(result: dict[str, Any]) -> Table:
    """Per-class scores and their means."""
    if result.get("threshold") is None:
        mode = "masks"
    else:
        mode = f"threshold {result['threshold']:g}" + (" (oracle)" if result.get("oracle") else "")
    table = Table(
        title=f"{escape(str(result.get('split', '')))} · {result.get('num_images', '?')} images · "
        f"{mode}",
        caption="mIoU averages all classes incl. background; FP/FN/Prec./Rec. averages "
        "foreground classes; – = undefined (class absent), left out of means",
    )
    table.add_column("class")
    for _, header in COLUMNS:
        table.add_column(header, justify="right")
    for name, scores in result["per_class"].items():
        table.add_row(escape(name), *(_fmt(scores[key]) for key, _ in COLUMNS))
    table.add_section()
    means = [result["miou"], *(result[key] for key, _ in COLUMNS[1:])]
    table.add_row("[bold]mean[/]", *(f"[bold]{_fmt(v)}[/]" for v in means))
    return table


def diagnostics_table(result: dict[str, Any]) -> Table:
    """The synthetic benchmark's part diagnostics (recall on parts, false-positive rates)."""
    table = Table(title="part diagnostics (%)")
    table.add_column("diagnostic")
    table.add_column("%", justify="right")
    for name in PART_METRICS:
        if name in result:
            table.add_row(name, _fmt(result[name]))
    return table


def groups_table(result: dict[str, Any]) -> Table:
    """Class groups with mean properties and IoU, then the correlations with IoU."""
    analysis = result["groups"]
    table = Table(title="class groups (O occurrences, %S size, %C co-occurrence, L labels)")
    for header in ("kind", "group", "classes", "O", "%S", "%C", "L", "IoU"):
        table.add_column(
            header, justify="left" if header in ("kind", "group", "classes") else "right"
        )
    for kind, groups in analysis["groups"].items():
        for name, g in groups.items():
            table.add_row(
                kind,
                escape(name),
                escape(" ".join(g["classes"])),
                *(_fmt(g[key]) for key in ("O", "S", "C", "L", "iou")),
            )
        table.add_section()
    for prop, row in analysis["correlation"].items():
        table.add_row("pearson", f"{prop} ~ IoU", "", "", "", "", "", _fmt(row["iou"], 2))
    return table


def print_result(result: dict[str, Any], console: Console | None = None) -> None:
    """Print :func:`result_table`, then the diagnostics and groups tables when present."""
    console = console or Console()
    console.print(result_table(result))
    if any(name in result for name in PART_METRICS):
        console.print(diagnostics_table(result))
    if "groups" in result:
        console.print(groups_table(result))
