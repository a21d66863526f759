"""Confusion matrix and segmentation metrics."""

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from wsss.errors import DataError
from wsss.evaluate import ConfusionMatrix, class_scores, summary_scores

# 4×4 example, 3 classes (0 background, 1, 2); the two 255 pixels are not evaluated.
GT = np.array(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 1, 1],
        [2, 2, 255, 255],
    ],
    dtype=np.uint8,
)
PRED = np.array(
    [
        [0, 1, 1, 1],
        [0, 0, 1, 0],
        [2, 0, 1, 1],
        [2, 2, 2, 0],
    ],
    dtype=np.uint8,
)


def test_hand_computed_4x4():
    cm = ConfusionMatrix(3).update(GT, PRED)
    # gt 0 (4 px): pred 0,1,0,0 · gt 1 (6 px): five 1s, one 0 · gt 2 (4 px): three 2s, one 0
    np.testing.assert_array_equal(cm.matrix, [[3, 1, 0], [1, 5, 0], [1, 0, 3]])
    # T = (4, 6, 4), P = (5, 6, 3), TP = (3, 5, 3), U = T + P - TP = (6, 7, 4)
    s = class_scores(cm.matrix)
    np.testing.assert_allclose(s["iou"], [3 / 6, 5 / 7, 3 / 4])
    np.testing.assert_allclose(s["fp"], [2 / 6, 1 / 7, 0 / 4])
    np.testing.assert_allclose(s["fn"], [1 / 6, 1 / 7, 1 / 4])
    np.testing.assert_allclose(s["precision"], [3 / 5, 5 / 6, 3 / 3])
    np.testing.assert_allclose(s["recall"], [3 / 4, 5 / 6, 3 / 4])
    m = summary_scores(cm.matrix)
    # mIoU over all three classes; the rest over the foreground classes 1 and 2
    assert m["miou"] == pytest.approx((0.5 + 5 / 7 + 0.75) / 3)  # 0.654762
    assert m["fp"] == pytest.approx((1 / 7 + 0) / 2)  # 0.071429
    assert m["fn"] == pytest.approx((1 / 7 + 1 / 4) / 2)  # 0.196429
    assert m["precision"] == pytest.approx((5 / 6 + 1) / 2)  # 0.916667
    assert m["recall"] == pytest.approx((5 / 6 + 3 / 4) / 2)  # 0.791667


def _random_masks(rng, n, shape, classes):
    gt = rng.choice(classes, size=(n, *shape)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = rng.choice(classes, size=(n, *shape)).astype(np.uint8)
    # make predictions correlated with the ground truth so IoUs are not all tiny
    keep = (rng.random(gt.shape) < 0.6) & (gt != 255)
    pred[keep] = gt[keep]
    return gt, pred


def _torchmetrics_miou(gt, pred, n):
    metric = MulticlassJaccardIndex(num_classes=n, ignore_index=255, average="macro")
    return float(
        metric(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(gt.astype(np.int64)))
    )


def test_miou_matches_torchmetrics_all_classes_present():
    rng = np.random.default_rng(0)
    gt, pred = _random_masks(rng, 3, (17, 23), np.arange(6))
    cm = ConfusionMatrix(6)
    for g, p in zip(gt, pred, strict=True):
        cm.update(g, p)
    assert (cm.matrix.sum(0) > 0).all() and (cm.matrix.sum(1) > 0).all()
    expected = _torchmetrics_miou(gt, pred, 6)
    assert summary_scores(cm.matrix)["miou"] == pytest.approx(expected, abs=1e-6)


def test_absent_class_left_out_of_miou_like_torchmetrics():
    rng = np.random.default_rng(1)
    gt, pred = _random_masks(rng, 2, (9, 11), np.array([0, 1, 2, 4]))  # class 3 never appears
    cm = ConfusionMatrix(5)
    for g, p in zip(gt, pred, strict=True):
        cm.update(g, p)
    s = class_scores(cm.matrix)
    assert np.isnan(s["iou"][3]) and np.isfinite(s["iou"][[0, 1, 2, 4]]).all()
    miou = summary_scores(cm.matrix)["miou"]
    assert miou == pytest.approx(s["iou"][[0, 1, 2, 4]].mean())
    assert miou == pytest.approx(_torchmetrics_miou(gt, pred, 5), abs=1e-6)


def test_iou_fp_fn_sum_to_one():
    rng = np.random.default_rng(2)
    gt, pred = _random_masks(rng, 1, (31, 29), np.arange(8))
    s = class_scores(ConfusionMatrix(8).update(gt[0], pred[0]).matrix)
    np.testing.assert_allclose(s["iou"] + s["fp"] + s["fn"], 1.0)


def test_perfect_prediction():
    rng = np.random.default_rng(3)
    gt, _ = _random_masks(rng, 1, (10, 10), np.arange(4))
    m = summary_scores(ConfusionMatrix(4).update(gt[0], gt[0]).matrix)
    assert m == pytest.approx({"miou": 1.0, "fp": 0.0, "fn": 0.0, "precision": 1.0, "recall": 1.0})


def test_merge_equals_single_accumulation():
    rng = np.random.default_rng(4)
    gt, pred = _random_masks(rng, 4, (8, 12), np.arange(5))
    whole = ConfusionMatrix(5)
    for g, p in zip(gt, pred, strict=True):
        whole.update(g, p)
    a, b = ConfusionMatrix(5), ConfusionMatrix(5)
    a.update(gt[0], pred[0]).update(gt[1], pred[1])
    b.update(gt[2], pred[2]).update(gt[3], pred[3])
    assert a + b == whole
    assert a.merge(b) == whole


def test_ignore_pixels_are_skipped_whatever_the_prediction():
    gt = np.array([[1, 255]], dtype=np.uint8)
    cm = ConfusionMatrix(2).update(gt, np.array([[1, 0]]))
    np.testing.assert_array_equal(cm.matrix, [[0, 0], [0, 1]])


def test_bad_input_raises():
    cm = ConfusionMatrix(3)
    with pytest.raises(DataError, match="prediction has class ids \\[3\\]"):
        cm.update(GT, np.full_like(PRED, 3))
    with pytest.raises(DataError, match="ground truth has class ids \\[7\\]"):
        cm.update(np.full_like(GT, 7), PRED)
    with pytest.raises(DataError, match="shape"):
        cm.update(GT, PRED[:2])
    with pytest.raises(ValueError, match="merge"):
        cm.merge(ConfusionMatrix(4))
