"""Rich tables of evaluation results (the dicts returned by ``evaluate``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from wsss.evaluate.parts import PART_METRICS
from wsss.evaluate.seeds import format_thresholds

__all__ = ["diagnostics_table", "groups_table", "print_result", "result_table", "sweep_table"]

COLUMNS = (("iou", "IoU"), ("fp", "FP"), ("fn", "FN"), ("precision", "Prec."), ("recall", "Rec."))


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def result_table(result: dict[str, Any]) -> Table:
    """Per-class scores and their means."""
    if result.get("threshold") is None:
        mode = "masks"
    else:
        kind = " (oracle)" if result.get("oracle") else " (fixed)" if result.get("sweep") else ""
        mode = f"threshold {result['threshold']:g}{kind}"
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


def _columns(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(header, scores)`` of the fixed and oracle results of a sweep, else of the result."""
    fixed = result.get("fixed")
    if fixed is None:
        return [("%", result)]
    return [
        (f"fixed {fixed['threshold']:g}", fixed),
        (f"oracle {result['threshold']:g}", result),
    ]


def sweep_table(result: dict[str, Any]) -> Table:
    """The sweep's grid, and the mean scores at the fixed threshold and at the oracle one."""
    grid = result.get("thresholds") or [row["threshold"] for row in result["sweep"]]
    table = Table(
        title=f"threshold sweep {format_thresholds(grid)} ({len(grid)} thresholds)",
        caption="oracle = the grid's best threshold on the ground truth (an upper bound); "
        "fixed = the honest result",
    )
    for header in ("", "threshold", "mIoU", *(header for _, header in COLUMNS[1:])):
        table.add_column(header, justify="left" if not header else "right")
    rows = [("oracle", result)]
    if "fixed" in result:
        rows.insert(0, ("fixed", result["fixed"]))
    for label, r in rows:
        means = [r["miou"], *(r[key] for key, _ in COLUMNS[1:])]
        table.add_row(label, f"{r['threshold']:g}", *(_fmt(v) for v in means))
    return table


def diagnostics_table(result: dict[str, Any]) -> Table:
    """The synthetic benchmark's part diagnostics (recall on parts, false-positive rates).

    With a sweep result that holds a ``fixed`` entry, one column each for the fixed and the
    oracle threshold.
    """
    columns = _columns(result)
    table = Table(title="part diagnostics (%)")
    table.add_column("diagnostic")
    for header, _ in columns:
        table.add_column(header, justify="right")
    for name in PART_METRICS:
        if name in result:
            table.add_row(name, *(_fmt(scores.get(name)) for _, scores in columns))
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
    """Print :func:`result_table`, then the sweep, diagnostics and groups tables when present.

    For a sweep with a ``fixed`` entry the per-class table is the fixed threshold's (the
    honest result); :func:`sweep_table` puts it beside the oracle row.
    """
    console = console or Console()
    fixed = result.get("fixed")
    console.print(result_table({**result, **fixed} if fixed else result))
    if result.get("sweep"):
        console.print(sweep_table(result))
    if any(name in result for name in PART_METRICS):
        console.print(diagnostics_table(result))
    if "groups" in result:
        console.print(groups_table(result))
