"""Class-group analysis."""

import numpy as np
import pytest

from wsss.errors import ConfigError
from wsss.evaluate import ClassStats, class_group_analysis, pearson

NAMES = ["a", "b", "c", "d"]  # "d" never occurs

# three 2×2 images (4 pixels each); segmentation ids are class index + 1
IMAGES = [
    ([1, 0, 0, 0], [[1, 1], [1, 0]]),  # a: 3/4
    ([1, 1, 0, 0], [[1, 0], [2, 2]]),  # a: 1/4, b: 2/4
    ([0, 1, 1, 0], [[2, 3], [3, 255]]),  # b: 1/4, c: 2/4 (the ignore pixel counts in H·W)
]
IOU = np.array([60.0, 40.0, 80.0, np.nan])


def _stats(images=IMAGES):
    stats = ClassStats(len(NAMES))
    for label, mask in images:
        stats.update(np.array(label, np.float32), np.array(mask, np.uint8))
    return stats


def test_class_properties_hand_example():
    p = _stats().properties()
    np.testing.assert_array_equal(p["O"], [2, 2, 1, 0])
    # S: a (75 + 25)/2, b (50 + 25)/2, c 50
    np.testing.assert_allclose(p["S"][:3], [50.0, 37.5, 50.0])
    # C: a alone in image 1, with b in image 2 → 50 %; b and c always with another class
    np.testing.assert_allclose(p["C"][:3], [50.0, 100.0, 100.0])
    # L: a (1 + 2)/2, b (2 + 2)/2, c 2
    np.testing.assert_allclose(p["L"][:3], [1.5, 2.0, 2.0])
    assert all(np.isnan(p[k][3]) for k in ("S", "C", "L"))


def test_merge_equals_single_pass():
    a = _stats(IMAGES[:1]).merge(_stats(IMAGES[1:]))
    b = _stats()
    for key, value in b.properties().items():
        np.testing.assert_array_equal(a.properties()[key], value)


def test_groups_and_correlation():
    out = class_group_analysis(_stats(), IOU, NAMES, groups={"ab": ["a", "b"], "dd": ["d"]})
    size = out["groups"]["size"]
    # usable classes a, b, c sorted by S (stable): b 37.5, a 50, c 50
    assert [size[k]["classes"] for k in ("small", "mid", "large")] == [["b"], ["a"], ["c"]]
    freq = out["groups"]["frequency"]
    # by O (stable): c 1, a 2, b 2
    assert [freq[k]["classes"] for k in ("low", "mid", "high")] == [["c"], ["a"], ["b"]]
    ab = out["groups"]["user"]["ab"]
    assert ab["classes"] == ["a", "b"]
    assert ab["O"] == 2.0 and ab["S"] == pytest.approx(43.75) and ab["C"] == 75.0
    assert ab["L"] == 1.75 and ab["iou"] == 50.0
    assert out["groups"]["user"]["dd"]["classes"] == []  # d never occurs
    s = [50.0, 37.5, 50.0]
    assert out["correlation"]["S"]["iou"] == pytest.approx(np.corrcoef(s, IOU[:3])[0, 1])
    assert out["correlation"]["O"]["O"] == pytest.approx(1.0)
    assert out["classes"]["c"] == {"O": 1.0, "S": 50.0, "C": 100.0, "L": 2.0, "iou": 80.0}


def test_pearson_matches_numpy_and_handles_constants():
    rng = np.random.default_rng(0)
    x, y = rng.random(20), rng.random(20)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert np.isnan(pearson(np.ones(5), x[:5]))


def test_unknown_group_class_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown classes \\['zebra'\\]"):
        class_group_analysis(_stats(), IOU, NAMES, groups={"g": ["a", "zebra"]})
