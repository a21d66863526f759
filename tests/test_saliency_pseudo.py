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
