"""Dense CRF: equal to direct pydensecrf calls, presets, the process pool, the missing extra."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from wsss.errors import ConfigError, DataError
from wsss.refine import crf as crf_module
from wsss.refine.crf import CRF_PRESETS, CRFParams, crf_labels, crf_many, crf_params, crf_probs

dcrf = pytest.importorskip("pydensecrf.densecrf")
from pydensecrf.utils import unary_from_labels, unary_from_softmax  # noqa: E402


def _image(rng: np.random.Generator, h: int = 23, w: int = 31) -> np.ndarray:
    # Two colour regions plus noise, so the bilateral term has edges to follow.
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 40, 40)
    img[:, w // 2 :] = (30, 60, 220)
    noise = rng.integers(-25, 25, size=img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def _direct_labels(img, labels, n, t, gt_prob, g_sxy, g_compat, b_sxy, b_srgb, b_compat):
    # The reference's crf_inference_label, written out with pydensecrf's own helpers.
    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(unary_from_labels(labels, n, gt_prob=gt_prob, zero_unsure=False))
    d.addPairwiseGaussian(sxy=g_sxy, compat=g_compat)
    d.addPairwiseBilateral(sxy=b_sxy, srgb=b_srgb, rgbim=np.ascontiguousarray(img), compat=b_compat)
    return np.argmax(np.array(d.inference(t)).reshape((n, h, w)), axis=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_crf_equals_direct_pydensecrf_calls(seed):
    rng = np.random.default_rng(seed)
    img = _image(rng)
    n = 3
    labels = rng.integers(0, n, size=img.shape[:2])
    expected = _direct_labels(img, labels, n, 10, 0.7, 3, 3, 50, 5, 10)
    got = crf_labels(img, labels, n, "seeds")
    np.testing.assert_array_equal(got, expected)
    # The CRF changed something: the comparison is not between two copies of the input.
    assert (got != labels).any()


def test_presets_hold_the_papers_values_and_are_overridable():
    assert CRF_PRESETS["seeds"] == CRFParams(10, 0.7, 3, 3, 50, 5, 10)
    dl = CRF_PRESETS["deeplab"]
    assert (dl.gaussian_sxy, dl.gaussian_compat) == (1, 3)
    assert (dl.bilateral_sxy, dl.bilateral_srgb, dl.bilateral_compat) == (67, 3, 4)
    rw = CRF_PRESETS["rw"]
    assert (rw.iterations, rw.gt_prob) == (1, 0.9)
    assert crf_params("rw", iterations=3).iterations == 3
    with pytest.raises(ConfigError, match="unknown CRF preset"):
        crf_params("nope")
    with pytest.raises(ConfigError, match="unknown CRF setting"):
        crf_params("seeds", sxy=3)
    with pytest.raises(ConfigError, match="gt_prob"):
        crf_params("seeds", gt_prob=1.0)


def test_deeplab_and_rw_presets_equal_direct_calls():
    rng = np.random.default_rng(5)
    img = _image(rng, 19, 17)
    labels = rng.integers(0, 4, size=img.shape[:2])
    expected = _direct_labels(img, labels, 4, 10, 0.7, 1, 3, 67, 3, 4)
    np.testing.assert_array_equal(crf_labels(img, labels, 4, "deeplab"), expected)
    np.testing.assert_array_equal(
        crf_labels(img, labels, 4, "rw"), _direct_labels(img, labels, 4, 1, 0.9, 3, 3, 50, 5, 10)
    )


@pytest.mark.parametrize("scale", [None, 0.8])
def test_probability_crf_equals_direct_pydensecrf_calls(scale):
    rng = np.random.default_rng(3)
    img = _image(rng, 15, 20)
    probs = rng.random((4, 15, 20)).astype(np.float32)
    probs /= probs.sum(0, keepdims=True)
    d = dcrf.DenseCRF2D(20, 15, 4)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs, scale=scale)))
    d.addPairwiseGaussian(sxy=1, compat=3)
    d.addPairwiseBilateral(sxy=67, srgb=3, rgbim=img, compat=4)
    expected = np.array(d.inference(10)).reshape(4, 15, 20)
    got = crf_probs(img, probs, "deeplab", scale=scale)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_pool_equals_the_loop():
    rng = np.random.default_rng(7)
    images = [_image(rng, 12 + i, 15 + 2 * i) for i in range(5)]
    counts = [2, 3, 4, 2, 3]
    labels = [rng.integers(0, n, size=im.shape[:2]) for im, n in zip(images, counts, strict=True)]
    loop = [crf_labels(im, lb, n) for im, lb, n in zip(images, labels, counts, strict=True)]
    pooled = crf_many(images, labels, counts, workers=2)
    assert len(pooled) == len(loop)
    for a, b in zip(pooled, loop, strict=True):
        np.testing.assert_array_equal(a, b)
    in_process = crf_many(images, labels, counts)
    assert all(np.array_equal(a, b) for a, b in zip(in_process, loop, strict=True))


def test_one_label_is_returned_unchanged_and_bad_inputs_are_refused():
    img = np.zeros((4, 5, 3), np.uint8)
    np.testing.assert_array_equal(crf_labels(img, np.zeros((4, 5), int), 1), np.zeros((4, 5)))
    with pytest.raises(DataError, match=r"0\.\.1"):
        crf_labels(img, np.full((4, 5), 2), 2)
    with pytest.raises(DataError, match="H×W×3"):
        crf_labels(img[:3], np.zeros((4, 5), int), 2)
    with pytest.raises(DataError, match="uint8"):
        crf_labels(img.astype(np.float32), np.zeros((4, 5), int), 2)
    with pytest.raises(DataError, match="integer"):
        crf_labels(img, np.zeros((4, 5)), 2)


def test_missing_extra_names_the_install_command(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("pydensecrf"):
            raise ImportError("No module named 'pydensecrf'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ConfigError, match=r'pip install "wsss\[crf\]"'):
        crf_module.crf_labels(np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3), int), 2)
