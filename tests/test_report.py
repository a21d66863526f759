"""HTML report and figures from fake results and fake map files."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from wsss.data.base import SegmentationDataset, voc_palette
from wsss.io.maps import ClassMaps, save_class_maps
from wsss.pipeline.core import RunDir, results_entry
from wsss.pipeline.stages import write_run_report as write_report
from wsss.report import ExampleColumn, render_html
from wsss.report.examples import usable_ids
from wsss.report.figures import PART_BARS, colorize_mask, heat_overlay, part_bars

CLASSES = ["cat", "dog"]


class TinyDataset(SegmentationDataset):
    """In-memory dataset: 4 images of 20×24 with one square object each."""

    def __init__(self) -> None:
        self.root, self.split, self.classes = None, "train", list(CLASSES)
        self.ids = [f"im{i}" for i in range(4)]
        rng = np.random.default_rng(0)
        self.images = {i: rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) for i in self.ids}

    def load_image(self, sample_id):
        return self.images[sample_id]

    def load_label(self, sample_id):
        label = np.zeros(2, np.float32)
        label[int(sample_id[-1]) % 2] = 1
        return label

    def load_mask(self, sample_id):
        mask = np.zeros((20, 24), np.uint8)
        mask[4:12, 5:15] = int(sample_id[-1]) % 2 + 1
        mask[4, 5:15] = 255
        return mask


def sweep_rows(peak: float) -> list[dict]:
    ts = np.round(np.arange(0.05, 0.951, 0.05), 2)
    return [
        {
            "threshold": float(t),
            "miou": 60 - 100 * (t - peak) ** 2,
            "precision": 40 + 50 * t,
            "recall": 90 - 60 * t,
            "fp": None,
            "fn": 10.0,
        }
        for t in ts
    ]


def fake_result(miou: float, threshold: float, peak: float) -> dict:
    return {
        "miou": miou,
        "fp": 21.25,
        "fn": 17.5,
        "precision": 66.6,
        "recall": 77.7,
        "threshold": threshold,
        "oracle": False,
        "split": "train",
        "num_images": 4,
        "head_recall": 97.25,
        "body_recall": 41.75,
        "body_near_recall": 55.5,
        "body_far_recall": 30.5,
        "context_fp": 12.5,
        "background_fp": 3.25,
        "per_class": {
            "background": {"iou": 80.5},
            "cat": {"iou": 33.125},
            "dog": {"iou": float("nan")},
        },
        "sweep": sweep_rows(peak),
    }


def fake_maps(dataset: TinyDataset, sample_id: str) -> ClassMaps:
    key = int(np.flatnonzero(dataset.load_label(sample_id))[0]) + 1
    hr = np.zeros((1, 20, 24), np.float32)
    hr[0, 4:12, 5:15] = 1.0
    hr[0, 12:16, 5:15] = 0.2
    return ClassMaps(keys=[key], cam=hr[:, ::4, ::4], hr=hr)


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith(("data:", "#")):
                self.external.append(attrs[key])
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> Collector:
    parser = Collector()
    parser.feed(text)
    parser.close()
    assert parser.stack == [], f"unclosed tags {parser.stack}"
    return parser


@pytest.fixture()
def run_with_results(tmp_path):
    dataset = TinyDataset()
    run = RunDir(tmp_path / "run")
    cam = fake_result(41.234, 0.3, 0.2)
    best = {**fake_result(48.76, 0.2, 0.2), "oracle": True}
    run.update_results({"cam": results_entry(cam, best)})
    run.update_results({"lpcam": results_entry(fake_result(52.0, 0.3, 0.45))})
    for method in ("cam", "lpcam"):
        for sample_id in dataset.ids:
            save_class_maps(
                run.maps_dir(method) / f"{sample_id}.npz", fake_maps(dataset, sample_id)
            )
    metrics = run.train_dir("cam") / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"step": 5, "loss": 0.9, "lr": 0.1}\n{"step": 5, "val/map": 0.5}\n')
    run.record_timing("train", 200.0)
    run.record_timing("cams", 50.0)
    run.write_config({"train": {"epochs": 8, "backbone": "resnet10t"}}, {"seed": 0})
    return run, dataset


def test_report_contains_table_values_and_embedded_images(run_with_results):
    run, dataset = run_with_results
    path = write_report(run, dataset, examples=3)
    text = path.read_text()
    doc = parse(text)
    page = " ".join(doc.text)
    for value in ("41.2", "48.8", "52.0", "21.2", "97.2", "41.8", "30.5", "12.5", "3.2", "33.1"):
        assert value in page
    assert "0.20" in page and "0.30" in page  # oracle and fixed thresholds
    assert "oracle" in page
    assert "resnet10t" in page and "train.epochs" in page
    assert "200.0" in page and "80.0" in page  # train share of total time
    # the only links lead to the run's artefacts, relative to the report
    assert "train/cam/" in doc.external and "maps/lpcam/" in doc.external
    for href in doc.external:
        assert not href.startswith(("/", "file:", "http")) and (run.path / href).exists()
    assert 'id="training"' in text
    # threshold curves, training curves, part bars, per-class bars, confusion matrix of the
    # worst-ranking seed masks, the fixed and the worst example grids
    assert len(doc.images) == 7
    for src in doc.images:
        header, data = src.split(",", 1)
        assert header == "data:image/png;base64"
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        assert image.width > 200 and image.height > 100  # one-row grids are short


def test_oracle_rows_are_marked(run_with_results):
    run, _ = run_with_results
    text = write_report(run).read_text()
    oracle_rows = re.findall(r'<tr class="oracle">(.*?)</tr>', text)
    assert len(oracle_rows) == 1  # only cam has a best entry
    assert "48.8" in oracle_rows[0] and "0.20" in oracle_rows[0]
    plain_rows = re.findall(r"<tr><td>(cam|lpcam)</td>(.*?)</tr>", text)
    assert [r[0] for r in plain_rows] == ["cam", "lpcam"]
    assert "41.2" in plain_rows[0][1]


def test_undefined_scores_render_as_dash(run_with_results):
    run, _ = run_with_results
    text = write_report(run).read_text()
    assert re.search(r"<td>dog</td><td>–</td>", text)


def test_report_without_dataset_or_results_still_renders(tmp_path):
    run = RunDir(tmp_path / "run")
    doc = parse(write_report(run).read_text())
    assert "No results yet." in " ".join(doc.text)
    assert doc.images == []


def test_render_html_escapes_text():
    text = render_html({"<b>x</b>": {"miou": 1.0, "threshold": 0.3}}, title="a<b")
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text
    parse(text)


def test_images_without_a_file_in_every_column_are_not_drawn(run_with_results):
    run, dataset = run_with_results
    (run.maps_dir("lpcam") / "im1.npz").unlink()
    cam = ExampleColumn("cam", run.maps_dir("cam"), "heat")
    lpcam = ExampleColumn("lpcam", run.maps_dir("lpcam"), "seed")
    assert usable_ids(dataset.ids, [cam, lpcam]) == ["im0", "im2", "im3"]
    assert usable_ids(dataset.ids, [cam]) == dataset.ids


def test_colorize_mask_uses_the_palette():
    mask = np.array([[0, 1], [2, 255]], np.uint8)
    rgb = colorize_mask(mask)
    palette = voc_palette()
    assert rgb.shape == (2, 2, 3)
    assert (rgb[0, 1] == palette[1]).all() and (rgb[1, 1] == [224, 224, 192]).all()


def test_heat_overlay_blends_jet_colours():
    image = np.zeros((2, 2, 3), np.uint8)
    heat = np.array([[0.0, 1.0], [0.5, 2.0]], np.float32)
    out = heat_overlay(image, heat, alpha=1.0)
    assert tuple(out[0, 0]) == (0, 0, 128)  # jet(0) is dark blue
    assert tuple(out[0, 1]) == (128, 0, 0)  # jet(1) is dark red
    assert (out[1, 1] == out[0, 1]).all()  # values above 1 are clipped
    with pytest.raises(ValueError):
        heat_overlay(image, heat[:1])


def test_prototype_make_up_is_weighted_by_cluster_size():
    def row(kind, members, head, context):
        return {
            "class": "cat",
            "kind": kind,
            "members": members,
            "head": head,
            "body": 0.0,
            "context": context,
            "background": 1 - head - context,
            "other_object": 0.0,
        }

    rows = [row("class", 10, 0.5, 0.0), row("class", 30, 0.1, 0.3), row("context", 5, 0.0, 0.8)]
    text = render_html({}, prototypes=rows)
    cells = re.findall(r"<tr><td>cat</td>(.*?)</tr>", text)
    values = [re.findall(r"<td>(.*?)</td>", c) for c in cells]
    # kind, prototypes, features, head, body, context, background, other
    assert values[0] == ["class", "2", "40", "20.0", "0.0", "22.5", "57.5", "0.0"]
    assert values[1] == ["context", "1", "5", "0.0", "0.0", "80.0", "20.0", "0.0"]


def test_part_bars_draw_each_methods_values_and_skip_runs_without_parts():
    a = fake_result(41.0, 0.3, 0.2)
    b = {**fake_result(52.0, 0.3, 0.45), "body_far_recall": None, "head_recall": 88.0}
    fig = part_bars({"cam": a, "lpcam": b, "no_parts": {"miou": 3.0, "threshold": 0.3}})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cam", "lpcam"]
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 2 * len(PART_BARS)
    assert heights[: len(PART_BARS)] == [a[key] for key, _ in PART_BARS]
    assert heights[len(PART_BARS)] == 88.0 and np.isnan(heights[len(PART_BARS) + 2])
    assert part_bars({"cam": {"miou": 3.0, "threshold": 0.3}}) is None
