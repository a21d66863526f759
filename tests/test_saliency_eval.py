"""Saliency metrics against independent computations: sklearn on the binary protocol, hand
counts and a direct per-threshold confusion for the P-NOC Table 6 protocol, and seed masks
whose background comes from saliency."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import jaccard_score, precision_score, recall_score

from wsss.errors import DataError
from wsss.evaluate.confusion import ConfusionMatrix
from wsss.evaluate.metrics import summary_scores
from wsss.evaluate.saliency import (
    SaliencySweep,
    binary_target,
    saliency_array,
    saliency_seed_mask,
)
from wsss.io.maps import ClassMaps


def _image(seed: int, shape: tuple[int, int] = (9, 11), classes: int = 4):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, classes, shape).astype(np.uint8)
    gt[rng.random(shape) < 0.1] = 255
    return gt, rng.random(shape).astype(np.float32)


def test_binary_target_maps_any_class_to_one_and_keeps_ignore() -> None:
    gt = np.array([[0, 3, 255], [1, 0, 20]], dtype=np.uint8)
    np.testing.assert_array_equal(binary_target(gt), [[0, 1, 255], [1, 0, 1]])


def test_binary_protocol_matches_sklearn() -> None:
    images = [_image(s) for s in range(3)]
    sweep = SaliencySweep(threshold=0.5, thresholds=[0.3, 0.7])
    for gt, sal in images:
        sweep.update(gt, sal)
    res = sweep.results()
    valid = np.concatenate([(gt != 255).ravel() for gt, _ in images])
    truth = np.concatenate([(gt != 0).ravel() for gt, _ in images])[valid]
    scores = np.concatenate([sal.ravel() for _, sal in images])[valid]
    for row in res["sweep"]:
        pred = scores > row["threshold"]
        ious = jaccard_score(truth, pred, average=None, labels=[0, 1])
        assert row["miou"] == pytest.approx(100 * ious.mean())
        assert row["precision"] == pytest.approx(100 * precision_score(truth, pred))
        assert row["recall"] == pytest.approx(100 * recall_score(truth, pred))
    assert [r["threshold"] for r in res["sweep"]] == [0.3, 0.5, 0.7]
    assert res["threshold"] == 0.5 and res["miou"] == res["sweep"][1]["miou"]
    best = max(res["sweep"], key=lambda r: r["miou"])
    assert res["best"] == {**best, "oracle": True}


def test_salient_means_strictly_above_the_threshold() -> None:
    gt = np.array([[1, 1]], dtype=np.uint8)
    sweep = SaliencySweep(threshold=0.5, thresholds=[])
    sweep.update(gt, np.array([[0.5, 0.6]], dtype=np.float32))
    # one object pixel at exactly 0.5 is missed: recall 1/2, IoU_fg 1/2, IoU_bg 0/1
    res = sweep.results()
    assert res["recall"] == pytest.approx(50.0)
    assert res["precision"] == pytest.approx(100.0)
    assert res["miou"] == pytest.approx(25.0)


def test_priors_protocol_by_hand() -> None:
    # one class present, so a salient background pixel is counted as class 1
    gt = np.array([[0, 1, 1, 0, 255]], dtype=np.uint8)
    sal = np.array([[0.9, 0.9, 0.1, 0.1, 0.9]], dtype=np.float32)
    sweep = SaliencySweep("priors", num_classes=3, threshold=0.5, thresholds=[])
    sweep.update(gt, sal)
    expected = np.zeros((3, 3), dtype=np.int64)
    expected[0, 1] = expected[1, 1] = expected[1, 0] = expected[0, 0] = 1
    np.testing.assert_array_equal(sweep.matrices()[0], expected)
    res = sweep.results()
    # IoU_0 = 1/3, IoU_1 = 1/3, class 2 absent (undefined, left out)
    assert res["miou"] == pytest.approx(100 / 3)
    assert res["precision"] == pytest.approx(50.0) and res["recall"] == pytest.approx(50.0)


def test_priors_sweep_matches_a_direct_count_per_threshold() -> None:
    thresholds = [0.2, 0.4, 0.6]
    sweep = SaliencySweep("priors", num_classes=5, threshold=0.4, thresholds=thresholds)
    direct = [ConfusionMatrix(5) for _ in thresholds]
    rng = np.random.default_rng(7)
    for i in range(4):
        gt = np.where(rng.random((8, 8)) < 0.5, 0, i + 1).astype(np.uint8)  # one class each
        gt[0, 0] = 255
        sal = rng.random((8, 8)).astype(np.float32)
        sweep.update(gt, sal, key=str(i))
        for t, cm in zip(thresholds, direct, strict=True):
            pred = np.where(sal > t, i + 1, 0)  # the only class present takes the salient bg
            cm.update(gt, pred)
    for got, cm in zip(sweep.matrices(), direct, strict=True):
        np.testing.assert_array_equal(got, cm.matrix)
    assert sweep.results()["miou"] == pytest.approx(100 * summary_scores(direct[1].matrix)["miou"])


def test_priors_random_classes_are_keyed_by_image_not_by_order() -> None:
    images = {str(s): _image(s, classes=5) for s in range(4)}
    whole = SaliencySweep("priors", num_classes=5, seed=3)
    for key, (gt, sal) in images.items():
        whole.update(gt, sal, key=key)
    first, second = (SaliencySweep("priors", num_classes=5, seed=3) for _ in range(2))
    for key in ("3", "1"):
        first.update(*images[key], key=key)
    for key in ("2", "0"):
        second.update(*images[key], key=key)
    np.testing.assert_array_equal(first.merge(second).matrices(), whole.matrices())
    # background-only image: the false positives go to some foreground class
    empty = SaliencySweep("priors", num_classes=4, threshold=0.5, thresholds=[])
    empty.update(np.zeros((3, 3), np.uint8), np.ones((3, 3), np.float32), key="x")
    m = empty.matrices()[0]
    assert m[0, 0] == 0 and m[0, 1:].sum() == 9


def test_sweep_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        SaliencySweep("priors")
    with pytest.raises(ValueError, match="protocol"):
        SaliencySweep("other")
    sweep = SaliencySweep("priors", num_classes=3)
    with pytest.raises(DataError, match="size"):
        sweep.update(np.zeros((2, 2), np.uint8), np.zeros((2, 3)))
    with pytest.raises(DataError, match="outside"):
        sweep.update(np.full((2, 2), 3, np.uint8), np.zeros((2, 2)))
    with pytest.raises(DataError, match="NaN"):
        sweep.update(np.zeros((1, 1), np.uint8), np.array([[np.nan]]))
    with pytest.raises(ValueError, match="different"):
        sweep.merge(SaliencySweep("binary"))


def _maps(hr: list) -> ClassMaps:
    hr = np.asarray(hr, dtype=np.float32)
    return ClassMaps(keys=[4, 9][: len(hr)], cam=hr, hr=hr)


def test_saliency_seed_mask_soft_background() -> None:
    maps = _maps([[[0.6, 0.6, 0.2, 0.0]], [[0.1, 0.7, 0.3, 0.0]]])
    sal = np.array([[0.5, 0.2, 0.75, 1.0]], dtype=np.float32)
    # background = 1 − s = [0.5, 0.8, 0.25, 0.0]; the last pixel ties at 0 → background
    np.testing.assert_array_equal(saliency_seed_mask(maps, sal), [[4, 0, 9, 0]])


def test_saliency_seed_mask_thresholded_background() -> None:
    maps = _maps([[[0.6, 0.6, 0.2, 0.0]], [[0.1, 0.7, 0.3, 0.0]]])
    sal = np.array([[0.1, 0.5, 0.5, 0.9]], dtype=np.float32)
    # non-salient (< 0.3) → background; salient → strongest class, background if all are 0
    np.testing.assert_array_equal(saliency_seed_mask(maps, sal, threshold=0.3), [[0, 9, 9, 0]])
    with pytest.raises(DataError, match="size"):
        saliency_seed_mask(maps, np.zeros((2, 4)))


def test_saliency_array_needs_one_channel() -> None:
    one = np.zeros((1, 2, 2), np.float32)
    np.testing.assert_array_equal(saliency_array(ClassMaps([1], one, one)), one[0])
    two = np.zeros((2, 2, 2), np.float32)
    with pytest.raises(DataError, match="one channel"):
        saliency_array(ClassMaps([1, 2], two, two))
