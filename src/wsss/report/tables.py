"""HTML pieces of the report: tables, figures, legends and links (every text escaped)."""

from __future__ import annotations

import base64
import html
import io
import math
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

__all__ = [
    "METRIC_COLUMNS",
    "artefacts_table",
    "command_block",
    "config_section",
    "fmt",
    "image_block",
    "legend",
    "metrics_table",
    "per_class_details",
    "per_class_table",
    "prototype_table",
    "table",
    "timings_table",
]

# (results key, column heading); a column is shown when any entry of the table has the key.
METRIC_COLUMNS = (
    ("miou", "mIoU"),
    ("fp", "FP"),
    ("fn", "FN"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("fg_precision", "fg precision"),
    ("bg_precision", "bg precision"),
    ("ignored", "ignored"),
    ("head_recall", "head R"),
    ("body_recall", "body R"),
    ("body_near_recall", "near R"),
    ("body_far_recall", "far R"),
    ("context_fp", "context FP"),
    ("background_fp", "other-bg FP"),
)
CLASS_SCORES = (("iou", "IoU"), ("fp", "FP"), ("fn", "FN"), ("precision", "P"), ("recall", "R"))
ORACLE_BADGE = ' <span class="badge">oracle</span>'


def fmt(value: Any, digits: int = 1) -> str:
    """A number with ``digits`` decimals, a dash for None/NaN, any other value escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def table(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    row_classes: Sequence[str] | None = None,
    cls: str = "",
) -> str:
    """A table in its own horizontally scrolling box (cells are trusted HTML)."""
    out = [
        '<div class="scroll">',
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
    out.append("</tbody></table></div>")
    return "".join(out)


def image_block(
    png: bytes, alt: str, caption: str = "", caption_first: bool = False, min_scale: float = 0.7
) -> str:
    """An inlined PNG figure. A figure wider than 700 px keeps at least ``min_scale`` of its
    size and scrolls inside its box on a narrow window rather than shrinking to unreadable
    text."""
    with Image.open(io.BytesIO(png)) as img:
        width = img.width
    data = base64.b64encode(png).decode("ascii")
    style = f' style="min-width: {round(min_scale * width)}px"' if width > 700 else ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    img = (
        f'<div class="scroll"><img alt="{html.escape(alt)}"{style} '
        f'src="data:image/png;base64,{data}"></div>'
    )
    return f"<figure>{cap}{img}</figure>" if caption_first else f"<figure>{img}{cap}</figure>"


def _variants(name: str, result: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], str]]:
    """(label, entry, row class) of an entry and of its oracle best."""
    label = html.escape(name)
    cls = ""
    if result.get("oracle"):  # an oracle result stored as the main entry
        label, cls = label + ORACLE_BADGE, "oracle"
    out = [(label, result, cls)]
    if result.get("best"):
        out.append((f"{html.escape(name)} best{ORACLE_BADGE}", result["best"], "oracle"))
    return out


def _shared(results: Mapping[str, Mapping[str, Any]], key: str) -> Any:
    values = {str(r.get(key)) for r in results.values()}
    return next(iter(results.values())).get(key) if len(values) == 1 else None


def metrics_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per entry (and one per oracle best), the columns any entry has.

    ``split``, ``protocol`` and ``threshold`` columns appear when they vary or exist; a split
    shared by every entry is said under the table instead.
    """
    everything = [r for res in results.values() for _, r, _ in _variants("", res)]
    columns = [(k, h) for k, h in METRIC_COLUMNS if any(k in r for r in everything)]
    lead: list[tuple[str, str, int | None]] = []
    if _shared(results, "split") is None and any("split" in r for r in results.values()):
        lead.append(("split", "split", None))
    if any("protocol" in r for r in everything):
        lead.append(("protocol", "protocol", None))
    if any(r.get("threshold") is not None for r in everything):
        lead.append(("threshold", "threshold", 2))
    head = ["method", *(h for _, h, _ in lead), *(h for _, h in columns)]
    rows, classes = [], []
    for name, result in results.items():
        for label, r, cls in _variants(name, result):
            cells = [fmt(r.get(k, result.get(k)), d if d else 1) for k, _, d in lead]
            rows.append([label, *cells, *(fmt(r.get(k)) for k, _ in columns)])
            classes.append(cls)
    out = table(head, rows, classes)
    split, count = _shared(results, "split"), _shared(results, "num_images")
    facts = [f"split <code>{html.escape(str(split))}</code>"] if split else []
    if count is not None:
        facts.append(f"{fmt(count, 0)} images")
    return out + (f'<p class="note">{" · ".join(facts)}</p>' if facts else "")


def _class_names(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    names: list[str] = []
    for result in results.values():
        for r in (result, result.get("best") or {}):
            names += [n for n in r.get("per_class") or {} if n not in names]
    return names


def per_class_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Classes down, each entry's IoU across (oracle bests beside their entry); empty string
    when no entry has per-class scores."""
    names = _class_names(results)
    if not names:
        return ""
    head, columns = ["class"], []
    for name, result in results.items():
        for label, r, _ in _variants(name, result):
            if r.get("per_class"):
                t = r.get("threshold")
                head.append(label if t is None else f"{label} (t={fmt(t, 2)})")
                columns.append(r["per_class"])
    rows = [[html.escape(n), *(fmt(c.get(n, {}).get("iou")) for c in columns)] for n in names]
    return table(head, rows)


def per_class_details(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Per entry, a folded table of every class's IoU, FP, FN, precision and recall."""
    parts = []
    for name, result in results.items():
        per_class = result.get("per_class")
        if not per_class:
            continue
        rows = [
            [html.escape(c), *(fmt((s or {}).get(k)) for k, _ in CLASS_SCORES)]
            for c, s in per_class.items()
        ]
        parts.append(
            f"<details><summary>{html.escape(name)}: IoU, FP, FN, precision, recall per class"
            f"</summary>{table(['class', *(h for _, h in CLASS_SCORES)], rows)}</details>"
        )
    return "".join(parts)


def timings_table(timings: Mapping[str, float]) -> str:
    """Seconds and share of each stage, with the total."""
    total = sum(timings.values())
    rows = [
        [html.escape(name), fmt(sec), fmt(100 * sec / total if total else None)]
        for name, sec in timings.items()
    ]
    rows.append(["<b>total</b>", f"<b>{fmt(total)}</b>", "100.0"])
    return table(["stage", "seconds", "share (%)"], rows)


_PARTS = ("head", "body", "context", "background", "other_object")


def prototype_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """Selected prototypes per class and kind, with the member-weighted part make-up."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["class"], row["kind"]), []).append(row)
    table_rows = []
    for (name, kind), members in groups.items():
        total = sum(r["members"] for r in members)
        shares = [
            fmt(100 * sum(r["members"] * r.get(part, 0.0) for r in members) / total)
            if total
            else "–"
            for part in _PARTS
        ]
        table_rows.append(
            [html.escape(name), html.escape(kind), str(len(members)), str(total), *shares]
        )
    head = ["class", "kind", "prototypes", "features", *(f"{p} (%)" for p in _PARTS)]
    return table(head, table_rows)


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        out = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, obj)]


def config_section(config: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    """Folded key/value tables of the configuration, seeds, versions and other provenance."""
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
            f"<details{open_attr}><summary>{html.escape(title)} ({len(items)})</summary>"
            f"{table(['key', 'value'], rows, cls='kv')}</details>"
        )
    return "".join(parts)


def command_block(command: str | Sequence[str]) -> str:
    """The command line in a wrapping ``<pre>`` (an argv list is shell-quoted)."""
    text = command if isinstance(command, str) else shlex.join(str(a) for a in command)
    return f'<pre class="command">{html.escape(text)}</pre>'


def artefacts_table(artefacts: Mapping[str, str | os.PathLike], base: Path | None) -> str:
    """Links to the artefacts by their path relative to ``base`` (the report's folder).

    An absolute path is made relative to ``base``; a relative one is taken as relative to it
    already. An artefact that does not exist (when ``base`` is known) is marked missing.
    """
    rows = []
    for label, target in artefacts.items():
        path = Path(target)
        if path.is_absolute() and base is not None:
            rel = os.path.relpath(path, base)
        else:
            rel = str(path)
        where = path if path.is_absolute() else (base / path if base is not None else None)
        href = quote(Path(rel).as_posix()) + ("/" if where is not None and where.is_dir() else "")
        state = ""
        if where is not None and not where.exists():
            state = ' <span class="note">(missing)</span>'
        link = f'<a href="{html.escape(href)}"><code>{html.escape(Path(rel).as_posix())}</code></a>'
        rows.append([html.escape(str(label)), link + state])
    return table(["artefact", "path (relative to this report)"], rows, cls="kv")


def legend(values: Iterable[int], class_names: Sequence[str], palette: np.ndarray) -> str:
    """Colour swatches of the mask values drawn (class ids, 255 = ignore)."""
    items = []
    for value in sorted(set(values)):
        if value == 255:
            name = "ignore (255)"
        elif value < len(class_names):
            name = class_names[value]
        else:
            name = f"id {value}"
        r, g, b = (int(c) for c in np.asarray(palette)[value][:3])
        items.append(
            f'<span><span class="swatch" style="background: rgb({r}, {g}, {b})"></span>'
            f"{html.escape(name)}</span>"
        )
    return f'<div class="legend">{"".join(items)}</div>' if items else ""
