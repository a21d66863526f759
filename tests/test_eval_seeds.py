"""Seed masks and the one-pass threshold sweep."""

import numpy as np
import pytest

from wsss.data import parts as codes
from wsss.errors import ConfigError, DataError
from wsss.evaluate import (
    ConfusionMatrix,
    PartCounts,
    ThresholdSweep,
    default_thresholds,
    format_thresholds,
    parse_thresholds,
    seed_mask,
)
from wsss.io.maps import ClassMaps


def _maps(keys, hr):
    hr = np.asarray(hr, dtype=np.float32)
    return ClassMaps(keys=np.asarray(keys), cam=hr[:, ::4, ::4], hr=hr)


def test_default_thresholds_are_the_p_noc_grid():
    t = default_thresholds()
    assert len(t) == 16 and t[0] == 0.05 and t[-1] == 0.80
    np.testing.assert_allclose(np.diff(t), 0.05)
    assert 0.3 in t  # exactly the float 0.3, so the fixed threshold is one of the grid's


def test_parse_and_format_thresholds():
    np.testing.assert_array_equal(parse_thresholds("0.05:0.80:0.05"), default_thresholds())
    wide = parse_thresholds("0.05:0.95:0.05")
    assert len(wide) == 19 and wide[-1] == 0.95
    np.testing.assert_array_equal(parse_thresholds("0.5, 0.2,0.3"), [0.5, 0.2, 0.3])
    np.testing.assert_array_equal(parse_thresholds("0.3:0.3:0.1"), [0.3])
    assert format_thresholds(default_thresholds()) == "0.05:0.80:0.05"
    assert format_thresholds([0.2, 0.3, 0.5]) == "0.20,0.30,0.50"
    assert format_thresholds([0.125, 0.25, 0.375]) == "0.125:0.375:0.125"
    for bad in ("", "0.1:0.5", "0.5:0.1:0.1", "0.1:0.5:-0.1", "x", "0.1,inf"):
        with pytest.raises(ConfigError, match="START:STOP:STEP"):
            parse_thresholds(bad)


def test_seed_mask_hand_example_and_ties_to_background():
    t = np.float32(0.3)
    up = np.nextafter(t, np.float32(1))
    # channel 0 is class 5, channel 1 is class 2
    hr = [
        [[0.9, 0.1, t, up], [0.5, 0.5, 0.0, 0.2]],
        [[0.2, 0.8, t, 0.1], [0.5, 0.4, 0.0, 0.6]],
    ]
    mask = seed_mask(_maps([5, 2], hr), 0.3)
    # (0,2): both maps equal t → background; (0,3): just above t → class 5;
    # (1,0): two classes tie above t → the first channel (class 5)
    np.testing.assert_array_equal(mask, [[5, 2, 0, 5], [5, 5, 0, 2]])
    assert mask.dtype == np.uint8


def test_seed_mask_without_classes_is_background():
    mask = seed_mask(_maps(np.zeros(0, np.int64), np.zeros((0, 3, 4))), 0.1)
    np.testing.assert_array_equal(mask, np.zeros((3, 4)))


def _random_image(rng, n, shape, with_key_count=None):
    k = rng.integers(0, 4) if with_key_count is None else with_key_count
    keys = rng.choice(np.arange(1, n), size=k, replace=False)
    hr = rng.random((k, *shape)).astype(np.float32)
    # plant exact threshold values to exercise the strict comparison
    hr[rng.random(hr.shape) < 0.1] = np.float32(0.35)
    gt = rng.integers(0, n, size=shape).astype(np.uint8)
    gt[rng.random(shape) < 0.1] = 255
    parts = rng.integers(0, 6, size=shape).astype(np.uint8)
    parts[rng.random(shape) < 0.05] = 255
    return gt, _maps(keys, hr), parts


def test_sweep_equals_single_threshold_evaluations():
    rng = np.random.default_rng(0)
    n = 6
    images = [_random_image(rng, n, (13, 17)) for _ in range(5)]
    images.append(_random_image(rng, n, (5, 7), with_key_count=0))
    sweep = ThresholdSweep(n)
    for gt, maps, parts in images:
        sweep.update(gt, maps, parts)
    matrices, part_counts = sweep.matrices(), sweep.part_counts()
    assert matrices.shape == (16, n, n)
    for i, t in enumerate(sweep.thresholds):
        cm, pc = ConfusionMatrix(n), PartCounts()
        for gt, maps, parts in images:
            pred = seed_mask(maps, t)
            cm.update(gt, pred)
            pc.update(parts, gt, pred)
        np.testing.assert_array_equal(matrices[i], cm.matrix, err_msg=f"threshold {t}")
        assert sweep.confusion(i) == cm
        np.testing.assert_array_equal(part_counts[i].counts, pc.counts, err_msg=f"threshold {t}")


def test_sweep_merge_equals_single_pass():
    rng = np.random.default_rng(1)
    images = [_random_image(rng, 5, (9, 8)) for _ in range(4)]
    whole, a, b = ThresholdSweep(5), ThresholdSweep(5), ThresholdSweep(5)
    for j, (gt, maps, parts) in enumerate(images):
        whole.update(gt, maps, parts)
        (a if j % 2 else b).update(gt, maps, parts)
    a.merge(b)
    np.testing.assert_array_equal(a.matrices(), whole.matrices())
    assert a.part_counts() == whole.part_counts()


def test_sweep_thresholds_sorted_and_unique():
    sweep = ThresholdSweep(3, [0.5, 0.1, 0.5])
    np.testing.assert_array_equal(sweep.thresholds, [0.1, 0.5])
    with pytest.raises(ValueError, match="merge"):
        sweep.merge(ThresholdSweep(3, [0.1]))


def test_sweep_bad_input():
    sweep = ThresholdSweep(3, [0.3])
    gt = np.zeros((4, 4), np.uint8)
    with pytest.raises(DataError, match="size"):
        sweep.update(gt, _maps([1], np.zeros((1, 4, 5))))
    with pytest.raises(DataError, match="keys"):
        sweep.update(gt, _maps([3], np.zeros((1, 4, 4))))
    with pytest.raises(DataError, match="NaN"):
        sweep.update(gt, _maps([1], np.full((1, 4, 4), np.nan)))
    with pytest.raises(DataError, match="part annotation"):
        sweep.update(gt, _maps([1], np.zeros((1, 4, 4))), parts=np.zeros((2, 2), np.uint8))


def test_part_counts_hand_example():
    parts = np.array([[1, 1, 2, 3], [4, 5, 0, 0], [3, 255, 4, 5]], dtype=np.uint8)
    gt = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [2, 255, 0, 255]], dtype=np.uint8)
    pred = np.array([[1, 2, 1, 0], [1, 0, 0, 2], [2, 1, 0, 1]], dtype=np.uint8)
    m = PartCounts().update(parts, gt, pred).metrics()
    # head: 2 px, one predicted 1 → 1/2; body near: 1 of 1; body far (0,3) missed, (2,0) right
    assert m["head_recall"] == pytest.approx(1 / 2)
    assert m["body_near_recall"] == pytest.approx(1 / 1)
    assert m["body_far_recall"] == pytest.approx(1 / 2)
    assert m["body_recall"] == pytest.approx(2 / 3)
    # context present: (1,0) fg, (2,2) bg → 1/2; context absent: (1,1) bg, (2,3) ignored → 0/1
    assert m["context_present_fp"] == pytest.approx(1 / 2)
    assert m["context_absent_fp"] == pytest.approx(0 / 1)
    assert m["context_fp"] == pytest.approx(1 / 3)
    # other background (1,2) bg, (1,3) fg → 1/2
    assert m["background_fp"] == pytest.approx(1 / 2)
    assert codes.HEAD == 1  # the example above is written in these codes


def test_part_metrics_undefined_without_pixels():
    m = PartCounts().metrics()
    assert all(np.isnan(v) for v in m.values())
