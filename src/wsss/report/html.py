"""A self-contained HTML report of a run: tables, curves and examples, images inlined.

Sections, each shown only when its values exist: command line; one table per result kind
(seed masks, saliency, affinity labels, pseudo masks, segmentation, see
:mod:`wsss.report.inputs`) with its threshold curves; object parts; per-class scores;
confusion matrices; training curves; example grids (fixed and worst images) with a colour
legend; LPCAM prototypes; artefact links; timings; configuration.
"""

from __future__ import annotations

import dataclasses
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsss.data.base import SegmentationDataset
from wsss.io.atomic import atomic_write_text
from wsss.report import tables
from wsss.report.examples import ExampleChoice, choose_examples, example_grid
from wsss.report.figures import (
    confusion_figure,
    figure_png,
    part_bars,
    per_class_bars,
    threshold_curves,
    training_curves,
)
from wsss.report.inputs import KINDS, ExampleColumn, ExampleSet, ReportInputs, group_results

__all__ = ["CSS", "render_html", "write_report"]

CSS = """
* { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; margin: 1.5em auto; padding: 0 1em;
       max-width: 1240px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.3em; }
nav.toc { font-size: 0.9em; line-height: 1.8; }
nav.toc a { margin-right: 0.9em; white-space: nowrap; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: separate; border-spacing: 0; margin: 0.6em 0; font-size: 0.9em; }
th, td { border-right: 1px solid #ccc; border-bottom: 1px solid #ccc; padding: 0.25em 0.6em;
         text-align: right; white-space: nowrap; }
thead th { background: #f0f0f0; border-top: 1px solid #ccc; vertical-align: bottom;
           white-space: normal; }
tr > :first-child { position: sticky; left: 0; z-index: 1; background: #fff; text-align: left;
                    border-left: 1px solid #ccc; }
thead tr > :first-child { background: #f0f0f0; z-index: 2; }
table.kv td { text-align: left; white-space: normal; overflow-wrap: anywhere; }
tr.oracle td { color: #775; background: #fbf8ec; font-style: italic; }
.badge { font-size: 0.75em; padding: 0.05em 0.4em; border-radius: 0.3em; background: #e9d98c;
         color: #553; font-style: normal; }
.note { color: #555; font-size: 0.9em; }
figure { margin: 0.8em 0; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.85em; margin-top: 0.3em; }
code, pre { background: #f6f6f6; overflow-wrap: anywhere; }
pre { padding: 0.6em; white-space: pre-wrap; font-size: 0.85em; }
details { margin: 0.3em 0; }
summary { cursor: pointer; }
.legend { display: flex; flex-wrap: wrap; gap: 0.2em 1.1em; font-size: 0.85em; margin: 0.4em 0; }
.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #777;
          vertical-align: -0.15em; margin-right: 0.35em; }
.heat { background: linear-gradient(to right, #00008f, #0080ff, #80ff80, #ff8000, #800000);
        width: 6em; }
@media (max-width: 900px) {
  body { margin: 0.8em auto; padding: 0 0.5em; }
  h1 { font-size: 1.3em; }
  table { font-size: 0.8em; }
  th, td { padding: 0.2em 0.4em; }
}
"""

# Example grids are as wide as the page (wsss.report.examples.GRID_WIDTH) with small text:
# below 80 % of their size they scroll in their box rather than shrink their labels further.
GRID_MIN_SCALE = 0.8

_KIND_NOTES = {
    "seeds": "Percentages. mIoU is the mean over all classes including background; FP, FN, "
    "precision and recall are means over the foreground classes. Head/body recall and "
    "context / other-background FP come from the benchmark's part annotation.",
    "saliency": "Class-agnostic saliency against the ground truth: a pixel is salient when its "
    "score is above the threshold. Protocol <code>binary</code>: background vs any object, "
    "precision and recall of the salient class; <code>priors</code>: the ground-truth classes "
    "as priors, mIoU over every class.",
    "affinity": "Affinity labels: confident foreground and background with an undecided band "
    "(255) between. <i>ignored</i> is the share of labelled pixels the band leaves out; "
    "precision counts the confident pixels only.",
    "pseudo_masks": "Pseudo masks, the segmentation model's training targets.",
    "segmentation": "The segmentation model's predictions against the ground truth.",
}
_ORACLE_NOTE = (
    ' Rows marked <span class="badge">oracle</span> use the threshold that maximises mIoU on '
    "the ground truth itself; they are an upper bound, not an honest result."
)


class _Page:
    """Sections in order, with their anchors for the table of contents."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.toc: list[tuple[str, str]] = []

    def section(self, anchor: str, title: str, *content: str) -> None:
        self.toc.append((anchor, title))
        self.parts.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')
        self.parts.extend(content)


def _png(fig: Any) -> bytes | None:
    return None if fig is None else figure_png(fig)


def _result_sections(page: _Page, results: Mapping[str, Mapping[str, Any]]) -> None:
    if not results:
        page.section("results", "Results", '<p class="note">No results yet.</p>')
        return
    for kind, entries in group_results(results).items():
        oracle = any(r.get("best") or r.get("oracle") for r in entries.values())
        content = [
            tables.metrics_table(entries),
            f'<p class="note">{_KIND_NOTES[kind]}{_ORACLE_NOTE if oracle else ""}</p>',
        ]
        if kind in ("seeds", "saliency"):
            curves = _png(threshold_curves(entries, "saliency" if kind == "saliency" else "seed"))
            if curves is not None:
                content.append(tables.image_block(curves, f"{kind} threshold curves"))
        page.section(kind.replace("_", "-"), KINDS[kind], *content)
    parts = _png(part_bars(results))
    if parts is not None:
        page.section(
            "parts",
            "Object parts",
            tables.image_block(parts, "recall per object part"),
            '<p class="note">Where each method finds the object (recall of heads, of bodies '
            "near and far from the head) and where it spills onto the background, at its fixed "
            "threshold.</p>",
        )


def _per_class_section(page: _Page, results: Mapping[str, Mapping[str, Any]]) -> None:
    content = []
    for kind, entries in group_results(results).items():
        overview = tables.per_class_table(entries)
        if not overview:
            continue
        bars = _png(per_class_bars(entries, f"{KINDS[kind]}: IoU per class"))
        content += [f"<h3>{html.escape(KINDS[kind])}</h3>"]
        if bars is not None:
            content.append(tables.image_block(bars, f"{kind} per-class IoU"))
        content += [overview, tables.per_class_details(entries)]
    if content:
        content.append(
            '<p class="note">Percentages per class; FP and FN are shares of the class\'s union '
            "of ground truth and prediction (IoU + FP + FN = 100).</p>"
        )
        page.section("per-class", "Per-class scores", *content)


def _confusion_section(
    page: _Page, matrices: Mapping[str, Any], class_names: Sequence[str] | None
) -> None:
    blocks = []
    for i, (name, counts) in enumerate(matrices.items()):
        counts = np.asarray(counts)
        names = list(class_names or [])
        if len(names) != counts.shape[0]:
            names = [f"class {k}" for k in range(counts.shape[0])]
        png = figure_png(confusion_figure(counts, names, name))
        blocks.append(
            f"<details{' open' if i == 0 else ''}><summary>{html.escape(name)}</summary>"
            f"{tables.image_block(png, f'confusion matrix of {name}')}</details>"
        )
    if blocks:
        page.section(
            "confusion",
            "Confusion matrices",
            '<p class="note">Rows: ground-truth class; columns: predicted class (and predicted '
            "ignore, 255); each row in percent of its pixels, so the diagonal is the recall.</p>",
            *blocks,
        )


def _examples_section(
    page: _Page, sets: Sequence[ExampleSet], choices: Sequence[ExampleChoice]
) -> None:
    content = []
    for example_set, choice in zip(sets, choices, strict=True):
        dataset = example_set.dataset
        columns = list(example_set.columns)
        drawn: set[int] = set()
        grids = []
        if choice.fixed:
            fig, values = example_grid(dataset, choice.fixed, columns)
            drawn |= values
            grids.append(
                tables.image_block(
                    figure_png(fig),
                    f"{example_set.title}: examples",
                    f"<b>Fixed examples</b>: {len(choice.fixed)} images spread evenly over the "
                    "split.",
                    caption_first=True,
                    min_scale=GRID_MIN_SCALE,
                )
            )
        if choice.worst and choice.ranked_by is not None:
            notes = {i: f"IoU {choice.scores[i]:.1f}" for i in choice.worst}
            ranked = sum(1 for v in choice.scores.values() if np.isfinite(v))
            fig, values = example_grid(dataset, choice.worst, columns, notes)
            drawn |= values
            rank = html.escape(choice.ranked_by.title)
            grids.append(
                tables.image_block(
                    figure_png(fig),
                    f"{example_set.title}: worst examples",
                    f"<b>Worst examples</b>: the {len(choice.worst)} images with the lowest "
                    f"per-image IoU of <b>{rank}</b> (mean IoU over the classes in the ground "
                    f"truth or the prediction) out of {ranked}, lowest first.",
                    caption_first=True,
                    min_scale=GRID_MIN_SCALE,
                )
            )
        if not grids:
            continue
        heat = any(c.kind in ("heat", "saliency") for c in columns)
        content += [
            f"<h3>{html.escape(example_set.title)}</h3>",
            tables.legend(drawn, dataset.class_names, dataset.palette),
            '<div class="legend"><span><span class="swatch heat"></span>heat maps and saliency: '
            "0 (blue) to 1 (red)</span></div>"
            if heat
            else "",
            *grids,
        ]
    if content:
        page.section("examples", "Examples", *content)


def _legacy_examples(
    dataset: SegmentationDataset | None,
    maps_dirs: Mapping[str, str | os.PathLike] | None,
    count: int,
    threshold: float,
) -> list[ExampleSet]:
    """The demo's grid: per map folder its heat map and seed mask; half fixed, half worst
    (ranked by the last folder's seed masks)."""
    dirs = {m: Path(d) for m, d in (maps_dirs or {}).items() if Path(d).is_dir()}
    if dataset is None or not dirs or count <= 0:
        return []
    columns = []
    for method, folder in dirs.items():
        columns.append(ExampleColumn(f"{method} heat map", folder, "heat"))
        columns.append(ExampleColumn(f"{method} seed", folder, "seed", threshold))
    worst = count // 2
    return [ExampleSet(dataset, columns, f"{dataset.split} split", count - worst, worst)]


def _same_counts(counts: np.ndarray, other: Any) -> bool:
    """Whether ``N×(N+1)`` counts (last column: predicted ignore) equal ``other`` (``N×N`` or
    ``N×(N+1)``)."""
    other = np.asarray(other)
    if other.shape == counts.shape:
        return bool(np.array_equal(other, counts))
    n = counts.shape[0]
    if other.shape == (n, n) and counts.shape == (n, n + 1) and not counts[:, n].any():
        return bool(np.array_equal(other, counts[:, :n]))
    return False


def render_html(
    inputs: ReportInputs | Mapping[str, Mapping[str, Any]],
    *,
    base_dir: str | os.PathLike | None = None,
    **fields: Any,
) -> str:
    """The report as one HTML document (no external assets besides the artefact links).

    Args:
        inputs: The values to show, or only the results (``results.json`` content), the other
            values then coming from ``fields``.
        base_dir: The report's folder, for the artefact links.
        **fields: Other :class:`~wsss.report.inputs.ReportInputs` fields when ``inputs`` is a
            mapping of results.
    """
    if not isinstance(inputs, ReportInputs):
        inputs = ReportInputs(results=inputs, **fields)
    elif fields:
        raise TypeError("give the fields inside the ReportInputs, not as keywords")
    base = None if base_dir is None else Path(base_dir)
    choices = [s.choice or choose_examples(s) for s in inputs.examples]
    matrices = {n: r["confusion"] for n, r in inputs.results.items() if r.get("confusion")}
    matrices.update(inputs.confusion)
    for example_set, choice in zip(inputs.examples, choices, strict=True):
        if choice.confusion is not None and choice.ranked_by is not None:
            if any(_same_counts(choice.confusion, m) for m in matrices.values()):
                continue  # e.g. the predictions ranking the val examples: the results' matrix
            name = f"{example_set.title}: {choice.ranked_by.title} ({example_set.dataset.split})"
            matrices.setdefault(name, choice.confusion)
    class_names = inputs.class_names
    if class_names is None and inputs.examples:
        class_names = inputs.examples[0].dataset.class_names

    page = _Page()
    command = inputs.command if inputs.command is not None else inputs.info.get("command")
    if command:
        page.section("command", "Command line", tables.command_block(command))
    _result_sections(page, inputs.results)
    training = _png(training_curves(inputs.training))
    if training is not None:
        page.section(
            "training",
            "Training",
            tables.image_block(training, "training curves"),
            '<p class="note">Per training run: its losses (validation losses dashed), learning '
            "rate and validation scores against the optimiser step.</p>",
        )
    _per_class_section(page, inputs.results)
    _confusion_section(page, matrices, class_names)
    _examples_section(page, inputs.examples, choices)
    if inputs.prototypes:
        page.section(
            "prototypes",
            "LPCAM prototypes",
            tables.prototype_table(inputs.prototypes),
            '<p class="note">Make-up of the selected prototypes\' clusters, weighted by their '
            "features: head, body (near and far), context texture, other background, or another "
            "class's object (the rest is the ignore band).</p>",
        )
    if inputs.artefacts:
        page.section("artefacts", "Artefacts", tables.artefacts_table(inputs.artefacts, base))
    if inputs.timings:
        page.section("timings", "Timings", tables.timings_table(inputs.timings))
    provenance = tables.config_section(inputs.config, inputs.info)
    if provenance:
        page.section("configuration", "Configuration", provenance)
    nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in page.toc)
    title = html.escape(inputs.title)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{CSS}</style></head><body>"
        f"<h1>{title}</h1>{inputs.notes}"
        f'<nav class="toc">{nav}</nav>{"".join(page.parts)}</body></html>\n'
    )


def write_report(
    path: str | os.PathLike,
    results: ReportInputs | Mapping[str, Mapping[str, Any]],
    *,
    maps_dirs: Mapping[str, str | os.PathLike] | None = None,
    dataset: SegmentationDataset | None = None,
    num_examples: int = 8,
    threshold: float = 0.3,
    **fields: Any,
) -> Path:
    """Render the figures and the page of a run's values into ``path`` (atomically).

    Args:
        path: The HTML file to write; artefact links are relative to its folder.
        results: The values to show (:class:`~wsss.report.inputs.ReportInputs`), or only the
            results, the other values then coming from ``fields``.
        maps_dirs: Method → folder of its class maps: adds an example set of ``dataset`` with
            each method's heat map and seed mask (the demo's grid), half of ``num_examples``
            spread over the split, half the worst of the last method's seed masks.
        dataset: The split of that example set (skipped if None).
        num_examples: Images of that example set.
        threshold: Background threshold of its seed masks.
        **fields: Other :class:`~wsss.report.inputs.ReportInputs` fields (``title``,
            ``timings``, ``config``, ``info``, ``prototypes``, ``training``, ``confusion``,
            ``examples``, ``command``, ``artefacts``, ``class_names``, ``notes``).

    Returns:
        The path of the report.
    """
    if isinstance(results, ReportInputs):
        if fields:
            raise TypeError("give the fields inside the ReportInputs, not as keywords")
        inputs = results
    else:
        inputs = ReportInputs(results=results, **fields)
    legacy = _legacy_examples(dataset, maps_dirs, num_examples, threshold)
    if legacy:
        inputs = dataclasses.replace(inputs, examples=[*inputs.examples, *legacy])
    text = render_html(inputs, base_dir=Path(path).parent)
    atomic_write_text(path, text)
    return Path(path)
