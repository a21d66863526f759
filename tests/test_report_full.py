"""The report of a full pipeline run: sections by kind, figures from values, worst examples."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from report_sample import SEED_METHODS, sample_inputs, sample_results, sample_training
from wsss.data.base import SegmentationDataset
from wsss.errors import ConfigError, DataError
from wsss.io.maps import ClassMaps, save_class_maps
from wsss.io.masks import save_mask_png
from wsss.report import (
    ExampleColumn,
    ExampleSet,
    ReportInputs,
    group_results,
    load_metrics_records,
    render_html,
    result_kind,
    write_report,
)
from wsss.report.examples import choose_examples, image_iou, scan_column
from wsss.report.figures import confusion_figure, per_class_bars, training_curves
from wsss.report.html import CSS

SECTIONS = re.compile(r'<h2 id="([a-z-]+)">')
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
)


@pytest.fixture()
def no_drawing(monkeypatch):
    """Figures are built but neither laid out nor rendered (a 1-px PNG each): for tests of the
    page's structure, which does not depend on the pixels; figures are tested on their own."""
    monkeypatch.setattr("wsss.report.html.figure_png", lambda fig, dpi=None: TINY_PNG)
    monkeypatch.setattr(Figure, "tight_layout", lambda self, *args, **kwargs: None)


class Tree(HTMLParser):
    """Checks nesting; records each table's parent and every link."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict]] = []
        self.table_parents: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.table_parents.append(self.stack[-1][1].get("class", "") if self.stack else "")
        if tag == "a":
            self.links.append(attrs["href"])
        if tag not in ("img", "meta", "br"):
            self.stack.append((tag, attrs))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1][0] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> Tree:
    tree = Tree()
    tree.feed(text)
    tree.close()
    assert tree.stack == []
    return tree


def sections(text: str) -> list[str]:
    return SECTIONS.findall(text)


class Squares(SegmentationDataset):
    """2×2 images; ground truth given per id (classes "a", "b")."""

    def __init__(self, masks: dict[str, np.ndarray]) -> None:
        self.root, self.split, self.classes = Path("."), "train", ["a", "b"]
        self.ids = list(masks)
        self.masks = masks

    def load_image(self, sample_id):
        return np.full((*self.masks[sample_id].shape, 3), 128, np.uint8)

    def load_label(self, sample_id):
        mask = self.masks[sample_id]
        return np.array([(mask == 1).any(), (mask == 2).any()], np.float32)

    def load_mask(self, sample_id):
        return self.masks[sample_id]


# Result kinds -------------------------------------------------------------------------------


def test_result_kinds_from_prefix_shape_and_explicit_field():
    assert result_kind("cam", {}) == "seeds"
    assert result_kind("cam_saliency", {}) == "seeds"  # seeds with a saliency background
    assert result_kind("saliency_c2am_h", {}) == "saliency"
    assert result_kind("my_detector", {"protocol": "binary"}) == "saliency"
    assert result_kind("affinity_lpcam", {}) == "affinity"
    assert result_kind("rw_cam", {}) == "pseudo_masks"
    assert result_kind("segmentation", {}) == "segmentation"
    assert result_kind("rw_cam", {"kind": "segmentation"}) == "segmentation"  # the field wins
    with pytest.raises(ConfigError, match=r"'bogus'.*seeds"):
        result_kind("x", {"kind": "bogus"})
    groups = group_results({"rw_cam": {}, "cam": {}, "segmentation": {}, "lpcam": {}})
    assert list(groups) == ["seeds", "pseudo_masks", "segmentation"]
    assert list(groups["seeds"]) == ["cam", "lpcam"]


# Sections -----------------------------------------------------------------------------------


def test_empty_inputs_show_only_the_empty_results_note():
    text = render_html(ReportInputs())
    assert sections(text) == ["results"]
    assert "No results yet." in text


@pytest.mark.parametrize(
    ("name", "entry", "section"),
    [
        ("cam", {"miou": 40.0, "threshold": 0.3}, "seeds"),
        ("saliency_c2am", {"miou": 60.0, "protocol": "binary", "threshold": 0.2}, "saliency"),
        ("affinity_cam", {"miou": 50.0, "ignored": 31.25}, "affinity"),
        ("rw_cam", {"miou": 66.0}, "pseudo-masks"),
        ("segmentation", {"miou": 70.0, "split": "val"}, "segmentation"),
    ],
)
def test_each_result_kind_has_its_own_section(name, entry, section, no_drawing):
    assert sections(render_html({name: entry})) == [section]


def test_sections_appear_with_their_values(no_drawing):
    results = {"cam": {"miou": 40.0, "threshold": 0.3, "per_class": {"background": {"iou": 1}}}}
    base = sections(render_html(results))
    assert base == ["seeds", "per-class"]
    extra = {
        "command": {"command": ["wsss", "run"]},
        "training": {"training": {"cam": [{"step": 1, "loss": 1.0, "lr": 0.1}]}},
        "confusion": {"confusion": {"cam": [[3, 1], [0, 2]]}},
        "artefacts": {"artefacts": {"maps": "maps/cam"}},
        "timings": {"timings": {"train": 3.0}},
        "configuration": {"config": {"train": {"epochs": 1}}},
        "prototypes": {"prototypes": [{"class": "a", "kind": "class", "members": 2}]},
    }
    for section, fields in extra.items():
        found = sections(render_html(results, **fields))
        assert set(found) - set(base) == {section}, section
    # the command line recorded in run_info.json is shown too
    assert "command" in sections(render_html(results, info={"command": ["wsss", "demo"]}))


def test_threshold_curves_only_for_kinds_with_a_sweep():
    sweep = [{"threshold": t, "miou": 50.0, "precision": 60.0, "recall": 70.0} for t in (0.1, 0.2)]
    plain = render_html({"cam": {"miou": 1.0, "threshold": 0.1}, "rw_cam": {"miou": 2.0}})
    assert "<img" not in plain
    swept = render_html({"saliency_x": {"miou": 1.0, "threshold": 0.1, "sweep": sweep}})
    assert 'alt="saliency threshold curves"' in swept


def test_metric_columns_follow_the_kind(no_drawing):
    results = {
        "affinity_cam": {"miou": 55.0, "precision": 88.0, "ignored": 31.25, "split": "train"},
        "saliency_c2am": {"protocol": "priors", "threshold": 0.2, "miou": 61.0, "split": "train"},
        "segmentation": {"miou": 70.0, "split": "val", "num_images": 12},
    }
    text = render_html(results)
    saliency = text[text.index('id="saliency"') : text.index('id="affinity"')]
    assert "<th>protocol</th>" in saliency and "<td>priors</td>" in saliency
    affinity = text[text.index('id="affinity"') : text.index('id="segmentation"')]
    assert "<th>ignored</th>" in affinity and "<td>31.2</td>" in affinity
    assert "threshold" not in affinity  # masks have no threshold
    segmentation = text[text.index('id="segmentation"') :]
    assert "split <code>val</code> · 12 images" in segmentation


def test_text_is_escaped_everywhere(tmp_path, no_drawing):
    evil = "<script>x</script>"
    dataset = Squares({"i0": np.zeros((2, 2), np.uint8)})
    save_mask_png(tmp_path / "m" / "i0.png", np.zeros((2, 2), np.uint8))
    text = render_html(
        {evil: {"miou": 1.0, "per_class": {evil: {"iou": 2.0}}, "confusion": [[1]]}},
        title=evil,
        command=["run", evil],
        artefacts={evil: f"dir/{evil}"},
        timings={evil: 1.0},
        config={evil: evil},
        training={evil: [{"step": 1, "loss": 1.0, "lr": 0.1}]},
        examples=[ExampleSet(dataset, [ExampleColumn(evil, tmp_path / "m")], evil, 1, 0)],
        class_names=["background"],
    )
    assert evil not in text
    assert "&lt;script&gt;" in text
    tree = parse(text)
    assert any(evil in t for t in tree.text)  # shown as text, not run


# Layout -------------------------------------------------------------------------------------


def test_narrow_layout_rules_and_every_table_in_its_own_scroll_box(tmp_path, no_drawing):
    assert re.search(r"@media \(max-width: 900px\)", CSS)
    assert re.search(r"\.scroll \{ overflow-x: auto;", CSS)
    assert re.search(r"tr > :first-child \{ position: sticky; left: 0;", CSS)
    assert re.search(r"figure img \{[^}]*max-width: 100%", CSS)
    text = render_html(sample_results(8), config={"a": 1}, timings={"t": 1.0})
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    tree = parse(text)
    assert tree.table_parents and set(tree.table_parents) == {"scroll"}


def test_wide_figures_keep_most_of_their_size():
    seeds = {k: v for k, v in sample_results(2).items() if k in ("cam", "puzzle")}
    text = render_html(seeds)
    figures = re.findall(
        r'<img alt="[^"]*"( style="min-width: (\d+)px")? src="data:image/png;base64,([^"]+)"', text
    )
    assert len(figures) == 3  # threshold curves, parts, per-class bars
    widths = []
    for styled, min_width, data in figures:
        widths.append(Image.open(io.BytesIO(base64.b64decode(data))).width)
        if widths[-1] > 700:  # scrolls in its box below 70 % of its size instead of shrinking
            assert int(min_width) == round(0.7 * widths[-1])
        else:  # may shrink with the page
            assert not styled
    assert max(widths) > 700 and min(widths) <= 700  # both cases seen


# Figures from values ------------------------------------------------------------------------


def test_training_curves_draw_the_records():
    records = [
        {"step": 10, "epoch": 0, "loss": 2.0, "cls_loss": 1.5, "lr": 0.1},
        {"step": 20, "epoch": 0, "loss": 1.0, "cls_loss": 0.5, "lr": 0.05},
        {"step": 20, "epoch": 0, "val/loss": 1.2, "val/map": 0.4},
        {"step": 40, "epoch": 1, "loss": 0.5, "cls_loss": 0.25, "lr": 0.01},
        {"step": 40, "epoch": 1, "val/loss": 0.9, "val/map": 0.6},
    ]
    fig = training_curves({"cam": records, "empty": []})
    ax_loss, ax_lr, ax_val = fig.axes
    lines = {line.get_label(): line for line in ax_loss.get_lines()}
    assert list(lines) == ["loss", "cls_loss", "val/loss"]
    assert list(lines["loss"].get_xdata()) == [10, 20, 40]
    assert list(lines["loss"].get_ydata()) == [2.0, 1.0, 0.5]
    assert list(lines["val/loss"].get_ydata()) == [1.2, 0.9]
    assert lines["val/loss"].get_linestyle() == "--"
    (lr,) = ax_lr.get_lines()
    assert list(lr.get_ydata()) == [0.1, 0.05, 0.01]
    (val,) = ax_val.get_lines()
    assert val.get_label() == "val/map" and list(val.get_xdata()) == [20, 40]
    assert list(val.get_ydata()) == [0.4, 0.6]
    assert training_curves({"empty": []}) is None


def test_load_metrics_records(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "val/map": 0.5}\n')
    assert load_metrics_records(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "val/map": 0.5}]
    path.write_text('{"step": 1}\n{"loss": 2.0}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl:2: .*'step'"):
        load_metrics_records(path)
    path.write_text("{oops\n")
    with pytest.raises(DataError, match=r"metrics.jsonl:1: not valid JSON"):
        load_metrics_records(path)
    with pytest.raises(DataError, match="cannot read"):
        load_metrics_records(tmp_path / "missing.jsonl")


def test_per_class_bars_show_each_methods_iou():
    results = {
        "cam": {"per_class": {"background": {"iou": 80.0}, "a": {"iou": 20.0}}},
        "lpcam": {"per_class": {"background": {"iou": 70.0}, "a": {"iou": None}}},
        "none": {"miou": 1.0},
    }
    ax = per_class_bars(results).axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights[:3] == [80.0, 20.0, 70.0] and np.isnan(heights[3])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["background", "a"]
    assert per_class_bars({"none": {"miou": 1.0}}) is None


def test_confusion_figure_normalises_rows_and_labels_the_ignore_column():
    counts = np.array([[6, 2, 2], [0, 0, 0]])
    ax = confusion_figure(counts, ["background", "cat"], "x").axes[0]
    share = np.ma.filled(ax.images[0].get_array(), np.nan)
    np.testing.assert_allclose(share[0], [60.0, 20.0, 20.0])
    assert np.isnan(share[1]).all()  # a class without ground-truth pixels
    assert [t.get_text() for t in ax.get_xticklabels()] == ["background", "cat", "ignore"]
    with pytest.raises(ValueError, match="shape"):
        confusion_figure(counts, ["background", "cat", "dog"])


# Worst examples -----------------------------------------------------------------------------


def test_image_iou_by_hand():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 2, 2]], np.uint8)
    pred = np.array([[0, 0, 1, 0], [0, 1, 1, 1], [0, 0, 2, 255]], np.uint8)
    # background 3/5, class 1 3/5, class 2 1/2 (the predicted 255 is a miss)
    assert image_iou(gt, pred) == pytest.approx(100 * (0.6 + 0.6 + 0.5) / 3)
    assert image_iou(gt, gt) == 100.0
    assert np.isnan(image_iou(np.full((2, 2), 255, np.uint8), np.zeros((2, 2), np.uint8)))
    with pytest.raises(DataError):
        image_iou(gt, pred[:2])


@pytest.fixture()
def ranked(tmp_path):
    """Five images whose predictions have IoU a=100, b=50, c=0, d=50, e=undefined."""
    one = np.array([[1, 1], [0, 0]], np.uint8)
    masks = {k: one for k in "abcd"} | {"e": np.full((2, 2), 255, np.uint8)}
    preds = {
        "a": one,
        "b": np.array([[1, 1], [1, 1]], np.uint8),
        "c": np.array([[0, 0], [1, 1]], np.uint8),
        "d": np.array([[1, 1], [1, 1]], np.uint8),
        "e": one,
    }
    for key, pred in preds.items():
        save_mask_png(tmp_path / "pred" / f"{key}.png", pred)
    return Squares(masks), ExampleColumn("pseudo mask", tmp_path / "pred")


def test_scan_gives_per_image_iou_and_confusion_counts(ranked):
    dataset, column = ranked
    scores, counts = scan_column(dataset, column, dataset.ids)
    # b: background IoU 0/2, class 1 IoU 2/4 -> 25
    assert scores["a"] == 100.0 and scores["b"] == 25.0 and scores["c"] == 0.0
    assert scores["d"] == 25.0 and np.isnan(scores["e"])
    # rows ground truth (bg, a, b), columns prediction (bg, a, b, ignore)
    expected = np.zeros((3, 4), int)
    expected[0, 0] = 2  # a
    expected[1, 1] = 2
    expected[0, 1] += 2 * 2  # b, d: background predicted as class 1
    expected[1, 1] += 2 * 2
    expected[0, 1] += 2  # c swaps background and class 1
    expected[1, 0] += 2
    np.testing.assert_array_equal(counts, expected)


def test_worst_examples_lowest_first_ties_in_order_fixed_excluded(ranked):
    dataset, column = ranked
    choice = choose_examples(ExampleSet(dataset, [column], fixed=1, worst=2))
    assert choice.fixed == ["a"] and choice.worst == ["c", "b"]  # b before d: same IoU
    assert choice.ranked_by == column
    choice = choose_examples(ExampleSet(dataset, [column], fixed=3, worst=5))
    assert choice.fixed == ["a", "c", "e"] and choice.worst == ["b", "d"]  # e: undefined IoU
    assert choose_examples(ExampleSet(dataset, [column], fixed=2, worst=0)).worst == []


def test_worst_examples_rank_by_a_named_mask_column(ranked, tmp_path):
    dataset, column = ranked
    for key in dataset.ids:  # a second mask column where every image is perfect but b
        pred = dataset.masks[key] if key != "b" else np.zeros((2, 2), np.uint8)
        save_mask_png(tmp_path / "other" / f"{key}.png", pred)
    other = ExampleColumn("labels", tmp_path / "other")
    by_default = choose_examples(ExampleSet(dataset, [column, other], fixed=0, worst=1))
    assert by_default.ranked_by == other and by_default.worst == ["b"]  # the last mask column
    by_name = choose_examples(
        ExampleSet(dataset, [column, other], fixed=0, worst=1, rank_by="pseudo mask")
    )
    assert by_name.worst == ["c"]
    heat = ExampleColumn("cam", tmp_path / "maps", "heat")
    with pytest.raises(ConfigError, match="heat column"):
        ExampleSet(dataset, [heat], rank_by="cam").ranking_column()
    with pytest.raises(ConfigError, match="not a column"):
        ExampleSet(dataset, [column], rank_by="nope").ranking_column()
    assert ExampleSet(dataset, [heat]).ranking_column() is None
    with pytest.raises(ConfigError, match="kind 'png'"):
        ExampleColumn("x", tmp_path, "png")


def test_example_section_says_which_column_ranked_the_worst(ranked, tmp_path, no_drawing):
    dataset, column = ranked
    maps = np.zeros((1, 2, 2), np.float32)
    for key in dataset.ids:
        save_class_maps(tmp_path / "maps" / f"{key}.npz", ClassMaps([1], maps, maps))
    heat = ExampleColumn("CAM", tmp_path / "maps", "heat")
    text = render_html({}, examples=[ExampleSet(dataset, [heat, column], "train", 1, 2)])
    assert (
        "<b>Worst examples</b>: the 2 images with the lowest per-image IoU of <b>pseudo mask"
        in text
    )
    assert "out of 4" in text  # e has no defined IoU
    assert 'class="swatch heat"' in text
    legend = re.findall(r'class="swatch" style="[^"]*"></span>([^<]+)<', text)
    assert legend == ["background", "a"]
    assert sections(text) == ["results", "confusion", "examples"]


# The sample report: 8 methods and every stage -----------------------------------------------


def test_sample_report_with_eight_methods(tmp_path, no_drawing):
    inputs = sample_inputs(tmp_path, methods=8, images=6)
    path = write_report(tmp_path / "report.html", inputs)
    text = path.read_text()
    assert sections(text) == [
        "command", "seeds", "saliency", "affinity", "pseudo-masks", "segmentation", "parts",
        "training", "per-class", "confusion", "examples", "artefacts", "timings",
        "configuration",
    ]  # fmt: skip
    tree = parse(text)
    for method in SEED_METHODS:
        assert f"<tr><td>{method}</td>" in text
    assert len(re.findall(r'<tr class="oracle">', text)) == 8 + 2  # seeds and saliency bests
    assert "wsss run voc12-pnoc --out 'runs/voc & co' --set train.lr=0.1" in tree.text
    files = [link for link in tree.links if not link.startswith("#")]
    assert files == ["maps/cam/", "pseudo/rw_cam/", "segmentation/", "results.json"]
    for link in files[:3]:
        assert (tmp_path / link).is_dir()
    assert "(missing)" in text  # results.json is not written by the fixture
    assert set(sample_training()) == {"cam", "pnoc", "segmentation"}


def test_docs_report_example_runs_as_written(tmp_path, monkeypatch, no_drawing):
    docs = Path(__file__).resolve().parents[1] / "docs" / "report.md"
    blocks = re.findall(r"^```python\n(.*?)^```", docs.read_text(encoding="utf-8"), re.S | re.M)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "report_docs"}
    exec(compile(blocks[0], "docs/report.md", "exec"), namespace)
    text = namespace["path"].read_text(encoding="utf-8")
    assert sections(text) == [
        "command",
        "seeds",
        "pseudo-masks",
        "training",
        "confusion",
        "examples",
        "artefacts",
    ]
    assert '<a href="pseudo/"><code>pseudo</code></a>' in text
    # ground truth as prediction: every image is perfect, so the worst are any two
    assert "<b>Worst examples</b>: the 2 images" in text
