"""The split evaluator, its table and its threshold curve."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from wsss.data.base import SegmentationDataset, voc_palette
from wsss.data.image_io import write_mask
from wsss.errors import ConfigError, DataError
from wsss.evaluate import (
    ConfusionMatrix,
    PartCounts,
    class_scores,
    evaluate,
    print_result,
    save_threshold_curve,
    seed_mask,
    summary_scores,
)
from wsss.io.maps import ClassMaps, load_class_maps, save_class_maps


class ArrayDataset(SegmentationDataset):
    """In-memory split: masks, optional part codes; labels derived from the masks."""

    def __init__(self, masks, classes=("cat", "dog", "car"), parts=None):
        self.root = Path("memory")
        self.split = "train"
        self.classes = list(classes)
        self.ids = [f"im{i}" for i in range(len(masks))]
        self._masks = dict(zip(self.ids, masks, strict=True))
        self._parts = None if parts is None else dict(zip(self.ids, parts, strict=True))

    def load_mask(self, sample_id):
        return self._masks[sample_id]

    def load_label(self, sample_id):
        present = np.unique(self._masks[sample_id])
        present = present[(present > 0) & (present != 255)]
        label = np.zeros(self.num_classes, np.float32)
        label[present - 1] = 1
        return label

    def load_parts(self, sample_id):
        return None if self._parts is None else self._parts[sample_id]

    @property
    def has_parts(self):
        return self._parts is not None


def _make_split(tmp_path, rng, n=4, with_parts=False):
    masks, parts = [], []
    for i in range(n):
        h, w = 12 + i, 15 - i
        mask = np.zeros((h, w), np.uint8)
        mask[2:8, 3:9] = 1 + i % 3
        mask[6:, 8:] = 1 + (i + 1) % 3
        mask[1, :] = 255
        masks.append(mask)
        parts.append(rng.integers(0, 6, size=(h, w)).astype(np.uint8))
        present = np.unique(mask[(mask > 0) & (mask < 255)])
        hr = rng.random((len(present), h, w)).astype(np.float32)
        for j, key in enumerate(present):
            hr[j][mask == key] += 0.5  # maps that favour the truth
        hr /= hr.max(axis=(1, 2), keepdims=True)
        save_class_maps(tmp_path / "maps" / f"im{i}.npz", ClassMaps(present, hr[:, ::4, ::4], hr))
    return ArrayDataset(masks, parts=parts if with_parts else None)


def test_perfect_masks_give_100(tmp_path):
    ds = _make_split(tmp_path, np.random.default_rng(0))
    for sample_id in ds.ids:
        write_mask(tmp_path / "gt" / f"{sample_id}.png", ds.load_mask(sample_id))
    result = evaluate(ds, masks_dir=tmp_path / "gt", progress=False)
    assert result["miou"] == 100.0 and result["precision"] == 100.0 and result["recall"] == 100.0
    assert result["fp"] == 0.0 and result["fn"] == 0.0
    assert result["threshold"] is None and result["oracle"] is False
    assert result["num_images"] == 4 and result["source"]["type"] == "masks"
    json.dumps(result, allow_nan=False)


def test_maps_at_fixed_threshold_match_direct_computation(tmp_path):
    ds = _make_split(tmp_path, np.random.default_rng(1), with_parts=True)
    result = evaluate(ds, maps_dir=tmp_path / "maps", threshold=0.6, progress=False)
    cm, pc = ConfusionMatrix(4), PartCounts()
    for sample_id in ds.ids:
        pred = seed_mask(load_class_maps(tmp_path / "maps" / f"{sample_id}.npz"), 0.6)
        cm.update(ds.load_mask(sample_id), pred)
        pc.update(ds.load_parts(sample_id), ds.load_mask(sample_id), pred)
    expected = summary_scores(cm.matrix)
    for key in ("miou", "fp", "fn", "precision", "recall"):
        assert result[key] == pytest.approx(100 * expected[key])
    for key, value in pc.metrics().items():
        assert result[key] == pytest.approx(100 * value)
    iou = class_scores(cm.matrix)["iou"]
    assert [v["iou"] for v in result["per_class"].values()] == pytest.approx(100 * iou)
    assert list(result["per_class"]) == ["background", "cat", "dog", "car"]
    assert result["threshold"] == 0.6 and result["oracle"] is False and 0 < result["miou"] < 100


def test_sweep_rows_equal_single_threshold_runs(tmp_path):
    ds = _make_split(tmp_path, np.random.default_rng(2), with_parts=True)
    thresholds = [0.2, 0.5, 0.7, 0.9]
    result = evaluate(
        ds, maps_dir=tmp_path / "maps", sweep=True, thresholds=thresholds, progress=False
    )
    assert [row["threshold"] for row in result["sweep"]] == thresholds
    for row in result["sweep"]:
        single = evaluate(
            ds, maps_dir=tmp_path / "maps", threshold=row["threshold"], progress=False
        )
        assert row == pytest.approx({k: single[k] for k in row})
    best = max(result["sweep"], key=lambda r: r["miou"])
    assert result["oracle"] is True and result["threshold"] == best["threshold"]
    assert result["miou"] == best["miou"] and result["head_recall"] == best["head_recall"]
    default = evaluate(ds, maps_dir=tmp_path / "maps", sweep=True, progress=False)
    assert default["thresholds"] == pytest.approx(np.arange(0.05, 0.81, 0.05))  # P-NOC's grid
    assert [row["threshold"] for row in default["sweep"]] == default["thresholds"]


def test_sweep_holds_the_fixed_threshold_result(tmp_path):
    ds = _make_split(tmp_path, np.random.default_rng(8), with_parts=True)
    maps = tmp_path / "maps"
    # 0.33 is not on the grid: it is evaluated for the fixed entry only.
    result = evaluate(ds, maps_dir=maps, threshold=0.33, sweep=True, progress=False)
    single = evaluate(ds, maps_dir=maps, threshold=0.33, progress=False)
    assert result["fixed"] == {k: single[k] for k in result["fixed"]}
    assert set(result["fixed"]) == set(single) - {"split", "source", "num_images"}
    assert result["fixed"]["oracle"] is False and result["fixed"]["threshold"] == 0.33
    assert 0.33 not in [row["threshold"] for row in result["sweep"]]
    assert len(result["sweep"]) == 16 and result["oracle"] is True
    assert "fixed" not in single and "sweep" not in single


def test_workers_give_the_same_result(tmp_path):
    ds = _make_split(tmp_path, np.random.default_rng(3), n=6, with_parts=True)
    kwargs = dict(maps_dir=tmp_path / "maps", sweep=True, groups=True, progress=False)
    assert evaluate(ds, num_workers=2, **kwargs) == evaluate(ds, num_workers=0, **kwargs)


def test_rgb_prediction_masks_are_decoded(tmp_path):
    ds = _make_split(tmp_path, np.random.default_rng(4))
    for sample_id in ds.ids:
        rgb = voc_palette()[ds.load_mask(sample_id)]  # 255 → the boundary colour
        Image.fromarray(rgb).save(tmp_path / f"{sample_id}.png")
    # 255 only where the ground truth is ignored: the ground truth itself scores 100
    assert evaluate(ds, masks_dir=tmp_path, progress=False)["miou"] == 100.0
    gt0 = ds.load_mask("im0")
    pred0 = gt0.copy()
    pred0[5, :4] = 255  # labelled pixels (background and class 1) left unlabelled
    Image.fromarray(voc_palette()[pred0]).save(tmp_path / "im0.png")
    with pytest.raises(DataError, match=r"im0\.png.*4 pixels of 255"):
        evaluate(ds, masks_dir=tmp_path, progress=False)
    result = evaluate(ds, masks_dir=tmp_path, ignore_as_background=True, progress=False)
    cm = ConfusionMatrix(4).update(gt0, np.where(pred0 == 255, 0, pred0))
    for sample_id in ds.ids[1:]:
        cm.update(
            ds.load_mask(sample_id),
            np.where(ds.load_mask(sample_id) == 255, 0, ds.load_mask(sample_id)),
        )
    assert result["miou"] == pytest.approx(100 * summary_scores(cm.matrix)["miou"])
    assert result["miou"] < 100.0


def test_groups_in_result(tmp_path):
    ds = _make_split(tmp_path, np.random.default_rng(5))
    result = evaluate(
        ds, maps_dir=tmp_path / "maps", groups={"pets": ["cat", "dog"]}, progress=False
    )
    groups = result["groups"]
    assert set(groups["groups"]) == {"size", "frequency", "user"}
    pets = groups["groups"]["user"]["pets"]
    ious = [result["per_class"][c]["iou"] for c in ("cat", "dog")]
    assert pets["iou"] == pytest.approx(np.mean(ious))
    json.dumps(result, allow_nan=False)
    with pytest.raises(ConfigError, match="zebra"):
        evaluate(ds, maps_dir=tmp_path / "maps", groups={"g": ["zebra"]}, progress=False)


def test_bad_input_errors_name_the_file(tmp_path):
    ds = _make_split(tmp_path, np.random.default_rng(6))
    (tmp_path / "maps" / "im2.npz").unlink()
    with pytest.raises(DataError, match=r"im2\.npz"):
        evaluate(ds, maps_dir=tmp_path / "maps", progress=False)
    write_mask(tmp_path / "bad" / "im0.png", np.zeros((3, 3), np.uint8))
    for sample_id in ds.ids[1:]:
        write_mask(tmp_path / "bad" / f"{sample_id}.png", ds.load_mask(sample_id) % 255)
    with pytest.raises(DataError, match=r"im0\.png.*size"):
        evaluate(ds, masks_dir=tmp_path / "bad", progress=False)
    with pytest.raises(ConfigError, match="exactly one"):
        evaluate(ds, progress=False)
    with pytest.raises(ConfigError, match="class maps"):
        evaluate(ds, masks_dir=tmp_path / "bad", sweep=True, progress=False)
    with pytest.raises(ConfigError, match="sweep=True"):
        evaluate(ds, maps_dir=tmp_path / "maps", thresholds=[0.2], progress=False)
    with pytest.raises(DataError, match="not found"):
        evaluate(ds, masks_dir=tmp_path / "nowhere", progress=False)


def test_table_and_curve(tmp_path):
    ds = _make_split(tmp_path, np.random.default_rng(7), with_parts=True)
    result = evaluate(ds, maps_dir=tmp_path / "maps", sweep=True, progress=False)
    console = Console(record=True, width=120)
    print_result(result, console)
    text = console.export_text()
    assert "oracle" in text and "dog" in text
    fixed = result["fixed"]
    # diagnostics: one column for the fixed threshold, one for the oracle
    assert re.search(
        rf"head_recall +│ +{fixed['head_recall']:.1f} +│ +{result['head_recall']:.1f} ", text
    )
    assert re.search(rf"oracle +│ +{result['threshold']:g} +│ +{result['miou']:.1f} ", text)
    assert re.search(rf"fixed +│ +0.3 +│ +{fixed['miou']:.1f} ", text)
    png = tmp_path / "out" / "curve.png"
    save_threshold_curve(result, png)
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 100
    with pytest.raises(ValueError, match="sweep"):
        save_threshold_curve({**result, "sweep": None}, png)
