"""A self-contained HTML report of a run: tables, curves and examples, images inlined."""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wsss.data.base import SegmentationDataset
from wsss.io.atomic import atomic_write_text
from wsss.report.figures import (
    example_grid,
    figure_png,
    part_bars,
    pick_examples,
    threshold_curves,
)

__all__ = ["METRIC_COLUMNS", "render_html", "write_report"]

# (results key, column heading); a column is shown when any method has the key.
METRIC_COLUMNS = (
    ("miou", "mIoU"),
    ("fp", "FP"),
    ("fn", "FN"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("head_recall", "head R"),
    ("body_recall", "body R"),
    ("body_near_recall", "near R"),
    ("body_far_recall", "far R"),
    ("context_fp", "context FP"),
    ("background_fp", "other-bg FP"),
)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
table.kv td { text-align: left; }
tr.oracle td { color: #775; background: #fbf8ec; font-style: italic; }
.badge { font-size: 0.75em; padding: 0.05em 0.4em; border-radius: 0.3em; background: #e9d98c;
         color: #553; font-style: normal; }
.note { color: #555; font-size: 0.9em; }
img { max-width: 100%; }
code, pre { background: #f6f6f6; }
pre { padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(
    head: list[str], rows: list[list[str]], row_classes: list[str] | None = None, cls: str = ""
) -> str:
    out = [
        f'<table class="{cls}">' if cls else "<table>",
        "<thead><tr>",
        *(f"<th>{h}</th>" for h in head),
        "</tr></thead><tbody>",
    ]
    for i, row in enumerate(rows):
        row_cls = row_classes[i] if row_classes else ""
        out.append(f'<tr class="{row_cls}">' if row_cls else "<tr>")
        out.extend(f"<td>{cell}</td>" for cell in row)
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _metrics_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    columns = [
        (k, h)
        for k, h in METRIC_COLUMNS
        if any(k in r or k in r.get("best", {}) for r in results.values())
    ]
    head = ["method", "threshold", *(h for _, h in columns)]
    rows, classes = [], []
    for method, result in results.items():
        name = html.escape(method)
        variants = [(f"{name}", result, "")]
        if result.get("best"):
            badge = ' <span class="badge">oracle</span>'
            variants.append((f"{name} best{badge}", result["best"], "oracle"))
        for label, r, cls in variants:
            if cls == "" and r.get("oracle"):  # an oracle result stored as the main entry
                label, cls = f'{label} <span class="badge">oracle</span>', "oracle"
            cells = [_fmt(r.get(k)) for k, _ in columns]
            rows.append([label, _fmt(r.get("threshold"), 2), *cells])
            classes.append(cls)
    return _table(head, rows, classes)


def _per_class_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    names: list[str] = []
    for result in results.values():
        names += [n for n in result.get("per_class", {}) if n not in names]
    if not names:
        return '<p class="note">No per-class scores in the results.</p>'
    head, columns = ["class"], []
    for method, result in results.items():
        head.append(f"{html.escape(method)} (t={_fmt(result.get('threshold'), 2)})")
        columns.append(result.get("per_class", {}))
        if result.get("best", {}).get("per_class"):
            best = result["best"]
            head.append(f"{html.escape(method)} best (t={_fmt(best.get('threshold'), 2)}, oracle)")
            columns.append(best["per_class"])
    rows = [[html.escape(n), *(_fmt(c.get(n, {}).get("iou")) for c in columns)] for n in names]
    return _table(head, rows)


def _timings_table(timings: Mapping[str, float]) -> str:
    total = sum(timings.values())
    rows = [
        [html.escape(name), _fmt(sec), _fmt(100 * sec / total if total else None)]
        for name, sec in timings.items()
    ]
    rows.append(["<b>total</b>", f"<b>{_fmt(total)}</b>", "100.0"])
    return _table(["stage", "seconds", "share (%)"], rows)


_PARTS = ("head", "body", "context", "background", "other_object")


def _prototype_table(rows: list[Mapping[str, Any]]) -> str:
    """Selected prototypes per class and kind, with the member-weighted part make-up."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["class"], row["kind"]), []).append(row)
    table_rows = []
    for (name, kind), members in groups.items():
        total = sum(r["members"] for r in members)
        shares = [
            _fmt(100 * sum(r["members"] * r.get(part, 0.0) for r in members) / total)
            if total
            else "–"
            for part in _PARTS
        ]
        table_rows.append([html.escape(name), kind, str(len(members)), str(total), *shares])
    head = ["class", "kind", "prototypes", "features", *(f"{p} (%)" for p in _PARTS)]
    return _table(head, table_rows)


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        out = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, obj)]


def _config_section(config: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    parts = []
    sections = [("configuration", config), ("seeds", info.get("seeds", {}))]
    sections.append(("versions", {**info.get("versions", {}), "platform": info.get("platform")}))
    sections += [
        (k, v) for k, v in info.items() if isinstance(v, Mapping) and k not in ("seeds", "versions")
    ]
    for title, section in sections:
        items = [(k, v) for k, v in _flatten(section) if v is not None]
        if not items:
            continue
        rows = [[html.escape(k), html.escape(str(v))] for k, v in items]
        open_attr = " open" if len(items) <= 12 else ""
        parts.append(
            f"<details{open_attr}><summary>{title} ({len(items)})</summary>"
            f"{_table(['key', 'value'], rows, cls='kv')}</details>"
        )
    return "".join(parts) or '<p class="note">No configuration recorded.</p>'


def render_html(
    results: Mapping[str, Mapping[str, Any]],
    *,
    title: str = "wsss run",
    timings: Mapping[str, float] | None = None,
    config: Mapping[str, Any] | None = None,
    info: Mapping[str, Any] | None = None,
    curves_png: bytes | None = None,
    parts_png: bytes | None = None,
    examples_png: bytes | None = None,
    prototypes: Sequence[Mapping[str, Any]] | None = None,
    notes: str = "",
) -> str:
    """The report as one HTML document (no external assets).

    Args:
        results: ``results.json`` content: method → evaluation at the fixed threshold, with
            the oracle sweep's best under ``best``.
        title: Page title.
        timings: Stage name → wall seconds.
        config: The resolved configuration (``config.yaml``).
        info: Provenance (``run_info.json``: ``seeds``, ``versions``, other sections).
        curves_png: Threshold-curve figure.
        parts_png: Part-recall figure (:func:`wsss.report.figures.part_bars`).
        examples_png: Example grid figure.
        prototypes: Part make-up of the selected LPCAM prototypes
            (:func:`wsss.diagnostics.prototypes.prototype_composition` rows).
        notes: Extra HTML shown under the title.
    """
    first = next(iter(results.values()), {})
    split = first.get("split")
    subtitle = [f"split <code>{html.escape(str(split))}</code>"] if split else []
    if first.get("num_images") is not None:
        subtitle.append(f"{first['num_images']} images")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{" · ".join(subtitle)}</p>' if subtitle else "",
        notes,
        "<h2>Seed masks</h2>",
        _metrics_table(results) if results else '<p class="note">No results yet.</p>',
        '<p class="note">Percentages. mIoU is the mean over all classes including background; '
        "FP, FN, precision and recall are means over the foreground classes. Head/body recall "
        "and context / other-background FP come from the benchmark's part annotation. Rows "
        'marked <span class="badge">oracle</span> use the threshold that maximises mIoU on the '
        "ground truth itself; they are an upper bound, not an honest result.</p>",
    ]
    if curves_png is not None:
        body += ["<h2>Threshold curves</h2>", _img(curves_png, "threshold curves")]
    if parts_png is not None:
        body += ["<h2>Object parts</h2>", _img(parts_png, "recall per object part")]
    body += ["<h2>Per-class IoU</h2>", _per_class_table(results)]
    if examples_png is not None:
        body += ["<h2>Examples</h2>", _img(examples_png, "example grid")]
    if prototypes:
        body += [
            "<h2>LPCAM prototypes</h2>",
            _prototype_table(prototypes),
            '<p class="note">Make-up of the selected prototypes\' clusters, weighted by '
            "their features: head, body (near and far), context texture, other background, "
            "or another class's object (the rest is the ignore band).</p>",
        ]
    if timings:
        body += ["<h2>Timings</h2>", _timings_table(timings)]
    if config or info:
        body += ["<h2>Configuration</h2>", _config_section(config or {}, info or {})]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_report(
    path: str | os.PathLike,
    results: Mapping[str, Mapping[str, Any]],
    *,
    maps_dirs: Mapping[str, str | os.PathLike] | None = None,
    dataset: SegmentationDataset | None = None,
    num_examples: int = 8,
    threshold: float = 0.3,
    title: str = "wsss run",
    timings: Mapping[str, float] | None = None,
    config: Mapping[str, Any] | None = None,
    info: Mapping[str, Any] | None = None,
    prototypes: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Render the figures and the page of a run's values into ``path`` (atomically).

    Args:
        path: The HTML file to write.
        results: Method → evaluation (see :func:`render_html`).
        maps_dirs: Method → folder of its class maps, for the example grid.
        dataset: Dataset of the evaluated split; needed for the example grid (skipped if None).
        num_examples: Images in the example grid.
        threshold: Background threshold of the example seed masks.
        title: Page title.
        timings: Stage name → wall seconds.
        config: The resolved configuration.
        info: Provenance (``run_info.json``).
        prototypes: Part make-up of the selected LPCAM prototypes.

    Returns:
        The path of the report.
    """
    curves = threshold_curves(results)
    parts = part_bars(results)
    examples = None
    dirs = {m: Path(d) for m, d in (maps_dirs or {}).items() if Path(d).is_dir()}
    if dataset is not None and dirs and num_examples > 0:
        ids = pick_examples(dataset.ids, dirs, num_examples)
        if ids:
            examples = figure_png(example_grid(dataset, ids, dirs, threshold))
    text = render_html(
        results,
        title=title,
        timings=timings,
        config=config,
        info=info,
        curves_png=None if curves is None else figure_png(curves),
        parts_png=None if parts is None else figure_png(parts),
        examples_png=examples,
        prototypes=prototypes,
    )
    atomic_write_text(path, text)
    return Path(path)
