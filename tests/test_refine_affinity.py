"""Affinity labels: conventional and saliency-aware, by hand and against the reference order."""

from __future__ import annotations

import numpy as np
import pytest

from wsss.data.base import SegmentationDataset
from wsss.errors import ConfigError, DataError
from wsss.io.maps import ClassMaps, MapStore
from wsss.io.masks import MaskStore
from wsss.refine.affinity import (
    AFFINITY_THRESHOLDS,
    AffinityLabelScore,
    affinity_labels,
    preset_thresholds,
    saliency_affinity_labels,
    threshold_indices,
)
from wsss.refine.folders import evaluate_affinity_labels, make_affinity_labels

dcrf = pytest.importorskip("pydensecrf.densecrf")
from pydensecrf.utils import unary_from_labels  # noqa: E402


def _crf(img, labels, n, t=10, gt_prob=0.7):
    """IRN's crf_inference_label, written out."""
    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(unary_from_labels(labels, n, gt_prob=gt_prob, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(img), compat=10)
    return np.argmax(np.array(d.inference(t)).reshape((n, h, w)), axis=0)


def _maps(hr: np.ndarray, keys) -> ClassMaps:
    return ClassMaps(keys=keys, cam=np.zeros((len(keys), 1, 1), np.float32), hr=hr)


def _scene(seed: int, h: int = 20, w: int = 24):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    img[4:14, 5:15] = (220, 30, 30)
    hr = np.clip(rng.random((2, h, w)) * 0.3, 0, 1).astype(np.float32)
    hr[0, 4:14, 5:15] += 0.6
    hr[1, 10:18, 14:22] += 0.25
    return img, np.clip(hr, 0, 1)


def test_presets():
    assert AFFINITY_THRESHOLDS == {"irn": (0.30, 0.05), "lpcam": (0.45, 0.25)}
    assert preset_thresholds("lpcam") == (0.45, 0.25)
    assert preset_thresholds((0.5, 0.1)) == (0.5, 0.1)
    with pytest.raises(ConfigError, match="unknown affinity-label preset"):
        preset_thresholds("psa")


def test_threshold_ties_go_to_background():
    scores = np.array([[[0.3, 0.31, 0.2]], [[0.1, 0.31, 0.5]]], np.float32)
    np.testing.assert_array_equal(threshold_indices(scores, 0.3), [[0, 1, 2]])


def test_conventional_labels_by_hand_without_crf():
    hr = np.array(
        [
            [[0.9, 0.2, 0.02, 0.9]],  # class 4
            [[0.1, 0.1, 0.01, 0.95]],  # class 9
        ],
        np.float32,
    )
    img = np.zeros((1, 4, 3), np.uint8)
    got = affinity_labels(img, _maps(hr, [4, 9]), high=0.3, low=0.05, crf=None)
    # 0.9 → confident 4; 0.2 → not confident fg but above the low threshold → ignore;
    # 0.02 → confident background; max 0.95 of class 9 → 9.
    np.testing.assert_array_equal(got, [[4, 255, 0, 9]])
    assert got.dtype == np.uint8
    with pytest.raises(ConfigError, match="low <= high"):
        affinity_labels(img, _maps(hr, [4, 9]), high=0.1, low=0.3)


@pytest.mark.parametrize(("seed", "preset"), [(0, "irn"), (1, "lpcam")])
def test_conventional_labels_follow_the_reference_order(seed, preset):
    img, hr = _scene(seed)
    high, low = AFFINITY_THRESHOLDS[preset]
    keys = np.array([0, 3, 12])
    fg = keys[_crf(img, np.argmax(np.concatenate([np.full((1, *hr.shape[1:]), high), hr]), 0), 3)]
    bg = keys[_crf(img, np.argmax(np.concatenate([np.full((1, *hr.shape[1:]), low), hr]), 0), 3)]
    expected = fg.copy()
    expected[fg == 0] = 255
    expected[bg + fg == 0] = 0
    got = affinity_labels(img, _maps(hr, [3, 12]), high, low)
    np.testing.assert_array_equal(got, expected)
    assert {0, 3, 255} <= set(np.unique(got).tolist())


def test_saliency_labels_by_hand_without_crf():
    hr = np.array([[[0.9, 0.2, 0.9, 0.1]]], np.float32)  # class 5
    sal = np.array([[0.8, 0.8, 0.05, 0.05]], np.float32)
    img = np.zeros((1, 4, 3), np.uint8)
    got = saliency_affinity_labels(img, _maps(hr, [5]), sal, crf=None)
    # salient + confident → 5; salient, weak → ignore; not salient → background even where the
    # class map is confident (the class is masked by the saliency).
    np.testing.assert_array_equal(got, [[5, 255, 0, 0]])


def test_saliency_labels_follow_the_reference_order():
    img, hr = _scene(2)
    sal = np.zeros(hr.shape[1:], np.float32)
    sal[3:16, 4:20] = 0.7
    keys = np.array([0, 1, 2])
    salient = _crf(img, (sal > 0.1).astype(int), 2)
    cls = np.argmax(np.concatenate([np.full((1, *hr.shape[1:]), 0.4), hr]), 0)
    fg = keys[_crf(img, salient * cls, 3)]
    expected = fg.copy()
    expected[fg == 0] = 255
    expected[salient + fg == 0] = 0
    got = saliency_affinity_labels(img, _maps(hr, [1, 2]), sal)
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(DataError, match="saliency map"):
        saliency_affinity_labels(img, _maps(hr, [1, 2]), sal[:5])


def test_no_class_gives_all_background():
    img = np.zeros((3, 4, 3), np.uint8)
    empty = ClassMaps([], np.zeros((0, 1, 1)), np.zeros((0, 3, 4)))
    assert (affinity_labels(img, empty) == 0).all()
    assert (saliency_affinity_labels(img, empty, np.ones((3, 4))) == 0).all()


def test_score_by_hand():
    labels = np.array([[1, 1, 0, 255, 0, 2]])
    gt = np.array([[1, 2, 0, 1, 255, 0]])
    score = AffinityLabelScore()
    score.update(labels, gt)
    s = score.summary()
    # Valid pixels: 5 (the 255 of the GT is out). Confident: 1, 1, 0, 2 → correct 1, 0.
    assert s["pixels"] == 5
    assert s["precision"] == pytest.approx(2 / 4)
    assert s["fg_precision"] == pytest.approx(1 / 3)
    assert s["bg_precision"] == pytest.approx(1.0)
    assert s["ignored"] == pytest.approx(1 / 5)
    assert np.isnan(AffinityLabelScore().summary()["precision"])


class TinySet(SegmentationDataset):
    def __init__(self, scenes):
        self.classes = [f"c{i}" for i in range(4)]
        self.ids = [s[0] for s in scenes]
        self.split = "train"
        self._scenes = {s[0]: s for s in scenes}

    def load_image(self, sample_id):
        return self._scenes[sample_id][1]

    def load_label(self, sample_id):
        label = np.zeros(4, np.float32)
        label[np.asarray(self._scenes[sample_id][2], int) - 1] = 1
        return label

    def load_mask(self, sample_id):
        return self._scenes[sample_id][3]


@pytest.fixture
def folder(tmp_path):
    scenes, store = [], MapStore(tmp_path / "maps")
    for i in range(4):
        img, hr = _scene(10 + i)
        keys = [2, 4] if i != 3 else []
        gt = np.where(hr[0] > 0.5, 2, 0).astype(np.uint8)
        scenes.append((f"im{i}", img, keys, gt))
        if keys:
            store.save(f"im{i}", ClassMaps(keys, np.zeros((2, 5, 6), np.float32), hr))
    return TinySet(scenes), store


def test_folder_of_labels_pool_equals_loop_and_resumes(folder, tmp_path):
    dataset, maps = folder
    loop = MaskStore(tmp_path / "loop")
    run = make_affinity_labels(dataset, maps, loop, thresholds="irn")
    assert (run.written, run.skipped) == (4, 0)
    pooled = MaskStore(tmp_path / "pool")
    make_affinity_labels(dataset, maps, pooled, thresholds="irn", workers=2)
    for sample_id in dataset.ids:
        np.testing.assert_array_equal(pooled.load(sample_id), loop.load(sample_id))
    img = dataset.load_image("im0")
    expected = affinity_labels(img, maps.load("im0"), 0.30, 0.05)
    np.testing.assert_array_equal(loop.load("im0"), expected)
    assert (loop.load("im3") == 0).all()  # no foreground label: all background
    assert make_affinity_labels(dataset, maps, loop).skipped == 4
    summary = evaluate_affinity_labels(dataset, loop)
    assert 0 < summary["ignored"] < 1 and 0 < summary["precision"] <= 1


def test_saliency_folder_and_missing_maps(folder, tmp_path):
    dataset, maps = folder
    sal = MapStore(tmp_path / "sal")
    for sample_id in dataset.ids:
        h, w = dataset.load_image(sample_id).shape[:2]
        s = np.zeros((1, h, w), np.float32)
        s[0, 3:16, 4:20] = 0.7
        sal.save(sample_id, ClassMaps([1], np.zeros((1, 5, 6), np.float32), s))
    out = MaskStore(tmp_path / "sal_labels")
    make_affinity_labels(dataset, maps, out, saliency=sal)
    img = dataset.load_image("im1")
    expected = saliency_affinity_labels(img, maps.load("im1"), sal.load("im1").hr[0])
    np.testing.assert_array_equal(out.load("im1"), expected)
    (tmp_path / "maps" / "im2.npz").unlink()
    with pytest.raises(DataError, match="im2"):
        make_affinity_labels(dataset, maps, MaskStore(tmp_path / "other"))


def test_combination_rules_with_a_stub_crf(monkeypatch):
    """Where the CRFs disagree with the thresholds, the reference's rules decide."""
    import wsss.refine.affinity as affinity

    outputs = []

    def stub(image, labels, n, params):
        return outputs.pop(0)

    monkeypatch.setattr(affinity, "crf_labels", stub)
    img = np.zeros((1, 4, 3), np.uint8)
    maps = _maps(np.zeros((1, 1, 4), np.float32), [6])
    # Conventional: fg CRF → [6, 0, 0, 6], bg CRF → [6, 6, 0, 0]. Where fg has the class and
    # bg says background (last pixel), fg wins.
    outputs[:] = [np.array([[1, 0, 0, 1]]), np.array([[1, 1, 0, 0]])]
    np.testing.assert_array_equal(affinity_labels(img, maps), [[6, 255, 0, 6]])
    # Saliency-aware: salient CRF → [1, 1, 0, 0], class CRF → [1, 0, 0, 1]. The last pixel is
    # not salient but the class CRF gave it the class: it keeps it (reference behaviour).
    outputs[:] = [np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 1]])]
    got = saliency_affinity_labels(img, maps, np.zeros((1, 4), np.float32))
    np.testing.assert_array_equal(got, [[6, 255, 0, 6]])
