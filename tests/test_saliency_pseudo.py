"""Pseudo-saliency masks: strict threshold, the two-label CRF snapping to colour edges, and the
error naming the 'crf' extra when pydensecrf is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from wsss.errors import ConfigError, DataError
from wsss.refine.saliency import pseudo_saliency


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Dark left half, bright right half; a noisy saliency map of the right half."""
    image = np.zeros((24, 24, 3), dtype=np.uint8)
    image[:, 12:] = 230
    sal = np.zeros((24, 24), dtype=np.float32)
    sal[:, 12:] = 0.9
    sal[3, 3] = sal[20, 5] = 0.5  # false positives on the dark side
    sal[10, 18] = sal[15, 20] = 0.0  # holes in the bright side
    return image, sal


def test_threshold_is_strict_without_crf() -> None:
    image = np.zeros((1, 3, 3), dtype=np.uint8)
    sal = np.array([[0.2, 0.21, 0.0]], dtype=np.float32)
    mask = pseudo_saliency(image, sal, crf_iterations=0)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, [[0, 255, 0]])


def test_crf_snaps_to_the_colour_edge() -> None:
    pytest.importorskip("pydensecrf.densecrf")
    image, sal = _scene()
    raw = pseudo_saliency(image, sal, crf_iterations=0)
    assert raw[3, 3] == 255 and raw[10, 18] == 0
    refined = pseudo_saliency(image, sal)
    expected = np.zeros((24, 24), dtype=np.uint8)
    expected[:, 12:] = 255
    np.testing.assert_array_equal(refined, expected)


def test_missing_pydensecrf_names_the_crf_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    image, sal = _scene()
    with pytest.raises(ConfigError, match=r"'crf' extra"):
        pseudo_saliency(image, sal)
    pseudo_saliency(image, sal, crf_iterations=0)  # no CRF, no dependency


def test_inputs_are_checked() -> None:
    image, sal = _scene()
    with pytest.raises(DataError, match="size"):
        pseudo_saliency(image, sal[:10])
    with pytest.raises(DataError, match="uint8"):
        pseudo_saliency(image.astype(np.float32), sal)


# ------------------------------------------------------------------------- folders


class _Split:
    """Three 8×10 images; image ``c`` has no label."""

    def __init__(self) -> None:
        from pathlib import Path

        self.root, self.split, self.classes = Path("."), "train", ["x"]
        self.ids = ["a", "b", "c"]

    def load_image(self, sample_id: str) -> np.ndarray:
        image = np.zeros((8, 10, 3), np.uint8)
        image[2:6, 3:8] = 200
        return image

    def load_label(self, sample_id: str) -> np.ndarray:
        return np.array([0.0 if sample_id == "c" else 1.0], np.float32)


def _saliency_folder(tmp_path, split: _Split):
    from wsss.io.maps import ClassMaps, MapStore

    store = MapStore(tmp_path / "sal")
    store.root.mkdir()
    sal = np.zeros((1, 8, 10), np.float32)
    sal[0, 2:6, 3:8] = 0.9
    sal[0, 0, 0] = 0.2  # exactly the threshold: not salient
    for sample_id in split.ids:
        store.save(sample_id, ClassMaps([0], sal[:, ::4, ::4], sal))
    return store


def test_make_pseudo_saliency_writes_a_split(tmp_path) -> None:
    from wsss.io.masks import MaskStore
    from wsss.refine.saliency import make_pseudo_saliency

    split = _Split()
    store = _saliency_folder(tmp_path, split)
    store.path("c").unlink()  # the unlabelled image's map is never read
    out = MaskStore(tmp_path / "out")
    run = make_pseudo_saliency(split, store, out, crf_iterations=0)
    assert (run.written, run.skipped) == (3, 0)
    expected = np.zeros((8, 10), np.uint8)
    expected[2:6, 3:8] = 255
    np.testing.assert_array_equal(out.load("a"), expected)
    np.testing.assert_array_equal(out.load("b"), expected)
    np.testing.assert_array_equal(out.load("c"), np.zeros((8, 10), np.uint8))
    again = make_pseudo_saliency(split, store, out, crf_iterations=0)
    assert (again.written, again.skipped) == (0, 3)
    with pytest.raises(DataError, match=r"c\.npz"):
        make_pseudo_saliency(split, store, out, crf_iterations=0, unlabelled="keep", overwrite=True)


def test_make_pseudo_saliency_in_processes_matches_one_process(tmp_path) -> None:
    pytest.importorskip("pydensecrf.densecrf")
    from wsss.io.masks import MaskStore
    from wsss.refine.saliency import make_pseudo_saliency

    split = _Split()
    store = _saliency_folder(tmp_path, split)
    one, two = MaskStore(tmp_path / "one"), MaskStore(tmp_path / "two")
    make_pseudo_saliency(split, store, one)
    make_pseudo_saliency(split, store, two, workers=2)
    for sample_id in split.ids:
        np.testing.assert_array_equal(one.load(sample_id), two.load(sample_id))


def test_make_pseudo_saliency_refuses_class_maps(tmp_path) -> None:
    from wsss.io.maps import ClassMaps, MapStore
    from wsss.io.masks import MaskStore
    from wsss.refine.saliency import make_pseudo_saliency

    split = _Split()
    store = MapStore(tmp_path / "cams")
    store.root.mkdir()
    hr = np.zeros((2, 8, 10), np.float32)
    for sample_id in split.ids:
        store.save(sample_id, ClassMaps([1, 2], hr[:, ::4, ::4], hr))
    with pytest.raises(DataError, match=r"a\.npz: a saliency map has one channel, this file has 2"):
        make_pseudo_saliency(split, store, MaskStore(tmp_path / "out"), crf_iterations=0)
