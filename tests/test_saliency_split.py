"""Saliency maps and saliency-background seeds of a whole split, against hand counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsss.data.base import SegmentationDataset
from wsss.errors import DataError
from wsss.evaluate.saliency_split import evaluate_saliency, evaluate_saliency_seeds
from wsss.io.maps import ClassMaps, MapStore

# Two 4×5 images; classes 1 and 2. Image "a": class 1 on the top-left 2×2, one ignored pixel.
# Image "b": class 2 on the last column (4 pixels).
GT = {
    "a": np.array([[1, 1, 0, 0, 0], [1, 1, 0, 0, 255], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], np.uint8),
    "b": np.array([[0, 0, 0, 0, 2]] * 4, np.uint8),
}


class Split(SegmentationDataset):
    def __init__(self) -> None:
        self.root, self.split, self.classes, self.ids = Path("."), "train", ["p", "q"], ["a", "b"]

    def load_image(self, sample_id: str) -> np.ndarray:
        return np.zeros((4, 5, 3), np.uint8)

    def load_label(self, sample_id: str) -> np.ndarray:
        return np.array([1.0, 0.0] if sample_id == "a" else [0.0, 1.0], np.float32)

    def load_mask(self, sample_id: str) -> np.ndarray:
        return GT[sample_id]


def folder(path: Path, maps: dict[str, tuple[list[int], np.ndarray]]) -> Path:
    store = MapStore(path)
    store.root.mkdir()
    for sample_id, (keys, hr) in maps.items():
        store.save(sample_id, ClassMaps(keys, hr[:, ::4, ::4], hr))
    return path


def test_saliency_metrics_by_hand(tmp_path: Path) -> None:
    # "a": salient on the left two columns (8 px: 4 object + 4 background);
    # "b": salient on the last column at 0.5, its top pixel at 0.1.
    sa = np.zeros((1, 4, 5), np.float32)
    sa[0, :, :2] = 0.9
    sb = np.zeros((1, 4, 5), np.float32)
    sb[0, :, 4] = 0.5
    sb[0, 0, 4] = 0.1
    sal = folder(tmp_path / "sal", {"a": ([0], sa), "b": ([0], sb)})
    result = evaluate_saliency(Split(), sal, thresholds=[0.3, 0.6], progress=False)
    # Threshold 0.2: valid pixels 19 + 20. Object pixels 4 + 4; predicted salient 8 + 3;
    # true positives 4 + 3. Background: 31 pixels, predicted background 28, TP 31 − 4 = 27.
    fg_iou = 7 / (8 + 11 - 7)
    bg_iou = 27 / (31 + 28 - 27)
    assert result["protocol"] == "binary" and result["threshold"] == 0.2
    assert result["miou"] == pytest.approx(100 * (fg_iou + bg_iou) / 2)
    assert result["precision"] == pytest.approx(100 * 7 / 11)
    assert result["recall"] == pytest.approx(100 * 7 / 8)
    rows = {r["threshold"]: r for r in result["sweep"]}
    assert sorted(rows) == [0.2, 0.3, 0.6]
    # At 0.6 only image "a"'s 8 pixels are salient: fg IoU 4/(8 + 8 − 4), bg 27/(31 + 31 − 27).
    assert rows[0.6]["miou"] == pytest.approx(100 * (4 / (8 + 8 - 4) + 27 / (31 + 31 - 27)) / 2)
    assert result["best"]["oracle"] is True
    assert result["best"]["miou"] == max(r["miou"] for r in result["sweep"])
    assert result["num_images"] == 2 and result["source"]["type"] == "saliency"


def test_priors_protocol_uses_the_ground_truth_classes(tmp_path: Path) -> None:
    # Perfect saliency: with GT classes as priors every labelled pixel is right.
    maps = {k: ([0], ((v > 0) & (v < 255)).astype(np.float32)[None]) for k, v in GT.items()}
    result = evaluate_saliency(Split(), folder(tmp_path / "s", maps), "priors", progress=False)
    assert result["protocol"] == "priors"
    assert result["miou"] == pytest.approx(100.0)


def test_seeds_with_a_saliency_background_by_hand(tmp_path: Path) -> None:
    # Class maps: "a" class 1 = 0.6 everywhere; "b" class 2 = 0.6 everywhere.
    cams = folder(
        tmp_path / "cams",
        {
            "a": ([1], np.full((1, 4, 5), 0.6, np.float32)),
            "b": ([2], np.full((1, 4, 5), 0.6, np.float32)),
        },
    )
    # Saliency = the object masks: background 1 − s is 0 on objects (class wins), 1 elsewhere.
    sal = folder(
        tmp_path / "sal",
        {k: ([0], ((v > 0) & (v < 255)).astype(np.float32)[None]) for k, v in GT.items()},
    )
    result = evaluate_saliency_seeds(Split(), cams, sal, progress=False)
    assert result["miou"] == pytest.approx(100.0) and result["background"] == "1 - saliency"
    # With saliency 0.5 on every pixel, 1 − s = 0.5 < 0.6: everything is the class.
    half = folder(tmp_path / "half", {k: ([0], np.full((1, 4, 5), 0.5, np.float32)) for k in GT})
    soft = evaluate_saliency_seeds(Split(), cams, half, progress=False)
    # Background: never predicted, IoU 0. Class 1: TP 4, predicted 19 → 4/19. Class 2: 4/20.
    assert soft["miou"] == pytest.approx(100 * (0 + 4 / 19 + 4 / 20) / 3)
    # Thresholded at 0.6: saliency 0.5 < 0.6 is background everywhere.
    hard = evaluate_saliency_seeds(Split(), cams, half, saliency_threshold=0.6, progress=False)
    assert hard["per_class"]["background"]["iou"] == pytest.approx(100 * 31 / 39)
    assert hard["per_class"]["p"]["iou"] == 0.0 and hard["saliency_threshold"] == 0.6


def test_missing_and_wrong_files_are_named(tmp_path: Path) -> None:
    one = {"a": ([0], np.zeros((1, 4, 5), np.float32))}
    with pytest.raises(DataError, match=r"1 of the 2 images .* no saliency map file \(e\.g\. b\)"):
        evaluate_saliency(Split(), folder(tmp_path / "s1", one), progress=False)
    two = {k: ([1, 2], np.zeros((2, 4, 5), np.float32)) for k in GT}
    with pytest.raises(DataError, match=r"a\.npz: a saliency map has one channel"):
        evaluate_saliency(Split(), folder(tmp_path / "s2", two), progress=False)
    small = {k: ([0], np.zeros((1, 4, 4), np.float32)) for k in GT}
    with pytest.raises(DataError, match=r"a\.npz: saliency map of size"):
        evaluate_saliency(Split(), folder(tmp_path / "s3", small), progress=False)
