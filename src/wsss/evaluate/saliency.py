"""Saliency metrics: class-agnostic maps against segmentation ground truth (P-NOC §7.2).

Two protocols, both swept over thresholds (a pixel is salient when its score is strictly above
the threshold, as for seed masks):

- ``"binary"``: two classes, background vs any object class; mIoU is the mean of the two
  IoUs, precision and recall are those of the salient class.
- ``"priors"`` (P-NOC Table 6, "GT as segmentation priors"): the ground-truth classes stand in
  for a perfect classifier. A pixel is correct when it is salient and annotated with a class,
  or non-salient and annotated background. An object pixel predicted non-salient counts as
  background; a background pixel predicted salient counts as one of the image's ground-truth
  classes drawn at random (any class when the image has none), as in the reference code, so
  false positives are spread over the classes present. mIoU averages all N classes;
  precision and recall average the foreground classes (METHODS.md §4).

Pixels whose ground truth is 255 are ignored. :func:`saliency_seed_mask` builds seed masks
whose background comes from a saliency map instead of a constant threshold.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from wsss.data.base import IGNORE_INDEX
from wsss.errors import DataError
from wsss.evaluate.metrics import summary_scores
from wsss.evaluate.seeds import default_thresholds
from wsss.io.maps import ClassMaps

__all__ = [
    "PROTOCOLS",
    "SaliencySweep",
    "binary_target",
    "saliency_array",
    "saliency_seed_mask",
]

PROTOCOLS = ("binary", "priors")


def saliency_array(maps: ClassMaps) -> np.ndarray:
    """The ``H×W`` full-resolution map of a one-channel saliency file.

    Raises:
        DataError: The file holds more or fewer than one channel.
    """
    if maps.hr.shape[0] != 1:
        raise DataError(f"a saliency map has one channel, this one has {maps.hr.shape[0]}")
    return maps.hr[0]


def binary_target(gt: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``uint8`` mask: 0 background, 1 any class, ``ignore_index`` kept."""
    gt = np.asarray(gt)
    out = (gt != 0).astype(np.uint8)
    out[gt == ignore_index] = ignore_index
    return out


class SaliencySweep:
    """Confusion matrices of thresholded saliency maps at many thresholds in one pass.

    Args:
        protocol: ``"binary"`` or ``"priors"`` (see the module docstring).
        num_classes: Segmentation classes N, background included (``"priors"`` only).
        threshold: The fixed (honest) threshold reported first; default 0.2, the
            pseudo-saliency threshold (METHODS.md §6). Always part of the sweep.
        thresholds: Sweep values; default 0.05 … 0.95 step 0.05.
        seed: Seed of the random class given to false-positive pixels (``"priors"``).
        ignore_index: Ground-truth value that is not evaluated.
    """

    def __init__(
        self,
        protocol: str = "binary",
        num_classes: int | None = None,
        threshold: float = 0.2,
        thresholds: np.ndarray | list[float] | None = None,
        seed: int = 0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if protocol == "priors":
            if num_classes is None or num_classes < 2:
                raise ValueError("the 'priors' protocol needs num_classes >= 2 (with background)")
            self.num_classes = int(num_classes)
        else:
            self.num_classes = 2
        grid = default_thresholds() if thresholds is None else np.asarray(thresholds, np.float64)
        grid = np.unique(np.append(grid.reshape(-1), float(threshold)))
        if not np.isfinite(grid).all():
            raise ValueError(f"thresholds must be finite numbers, got {grid.tolist()}")
        self.protocol = protocol
        self.threshold = float(threshold)
        self.thresholds = grid
        self.seed = int(seed)
        self.ignore_index = ignore_index
        self._edges = grid.astype(np.float32)
        self._rng = np.random.default_rng(seed)
        n, bins = self.num_classes, len(grid) + 1
        self._hist = np.zeros((n, n, bins), dtype=np.int64)

    def update(self, gt: np.ndarray, saliency: np.ndarray, key: str | None = None) -> None:
        """Add one image: its ground-truth mask and ``H×W`` saliency map.

        Args:
            gt: Segmentation mask (class ids, ``ignore_index``).
            saliency: Scores, salient above the threshold.
            key: The image id; with ``"priors"`` it seeds the random classes of this image
                (with :attr:`seed`), so results do not depend on the order of images or on
                how a split is cut among workers.

        Raises:
            DataError: Shape mismatch, non-finite scores or ids outside ``0..N-1``.
        """
        gt = np.asarray(gt)
        score = np.asarray(saliency, dtype=np.float32)
        if score.shape != gt.shape:
            raise DataError(f"saliency map of size {score.shape} but ground truth {gt.shape}")
        if not np.isfinite(score).all():
            raise DataError("saliency map contains NaN or infinite values")
        valid = gt != self.ignore_index
        n = self.num_classes
        if self.protocol == "binary":
            g = (gt[valid] != 0).astype(np.int64)
            k = np.ones_like(g)
        else:
            g = gt[valid].astype(np.int64)
            if g.size and (g.min() < 0 or g.max() >= n):
                raise DataError(
                    f"ground truth has class ids outside 0..{n - 1} (other than ignore)"
                )
            k = self._salient_class(gt, g, key)
        below = np.searchsorted(self._edges, score[valid], side="left")  # thresholds < score
        bins = len(self.thresholds) + 1
        index = (g * n + k) * bins + below
        self._hist += np.bincount(index, minlength=n * n * bins).reshape(n, n, bins)

    def _salient_class(self, gt: np.ndarray, g: np.ndarray, key: str | None) -> np.ndarray:
        """Class of each valid pixel when salient: its own, or a random present class."""
        present = np.unique(gt[(gt != 0) & (gt != self.ignore_index)])
        if present.size == 0:
            present = np.arange(1, self.num_classes)
        if key is None:
            rng = self._rng
        else:
            rng = np.random.default_rng([self.seed, zlib.crc32(key.encode("utf-8"))])
        drawn = rng.choice(present, size=g.shape).astype(np.int64)
        return np.where(g != 0, g, drawn)

    def merge(self, other: SaliencySweep) -> SaliencySweep:
        """Add the counts of ``other`` (same protocol, classes and thresholds) in place."""
        if (
            other.protocol != self.protocol
            or other.num_classes != self.num_classes
            or not np.array_equal(other.thresholds, self.thresholds)
        ):
            raise ValueError("cannot merge saliency sweeps with different settings")
        self._hist += other._hist
        return self

    def matrices(self) -> np.ndarray:
        """``(T, N, N)`` confusion counts, one matrix per threshold (ascending)."""
        hist = self._hist
        tails = np.flip(np.cumsum(np.flip(hist, -1), -1), -1)  # tails[..., j] = hist[..., j:].sum
        salient = np.moveaxis(tails[..., 1:], -1, 0).copy()  # below > i: salient at threshold i
        salient[:, :, 0] += hist.sum((1, 2))[None] - salient.sum(2)
        return salient

    def results(self) -> dict[str, Any]:
        """JSON-ready scores in percent (None where undefined).

        Returns:
            ``protocol``, ``threshold`` (the fixed one), ``miou``, ``precision`` and
            ``recall`` at it, ``best``: the same at the threshold of highest mIoU with
            ``"oracle": True`` (chosen on the ground truth), and ``sweep`` (one row per
            threshold).
        """
        matrices = self.matrices()
        scores = summary_scores(matrices)
        rows = [
            {
                "threshold": float(t),
                **{name: _percent(scores[name][i]) for name in ("miou", "precision", "recall")},
            }
            for i, t in enumerate(self.thresholds)
        ]
        fixed = rows[int(np.flatnonzero(self.thresholds == self.threshold)[0])]
        miou = np.asarray(scores["miou"], dtype=np.float64)
        best = rows[int(np.nanargmax(miou))] if np.isfinite(miou).any() else rows[0]
        return {
            "protocol": self.protocol,
            **fixed,
            "best": {**best, "oracle": True},
            "sweep": rows,
        }


def _percent(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else 100.0 * value


def saliency_seed_mask(
    maps: ClassMaps, saliency: np.ndarray, threshold: float | None = None
) -> np.ndarray:
    """Seed mask whose background score comes from a saliency map (P-NOC's evaluation).

    The background plane stacked in front of the class maps is ``1 − saliency`` (default), or,
    with ``threshold``, 1 where ``saliency < threshold`` and 0 elsewhere; argmax as for
    :func:`~wsss.evaluate.seeds.seed_mask`, ties to background. So with the default a class
    wins where its map exceeds ``1 − saliency``; with a threshold, non-salient pixels are
    background and salient ones take the strongest class (background if every map is 0).

    Args:
        maps: Class maps; channel ``j`` becomes segmentation id ``maps.keys[j]``.
        saliency: ``H×W`` saliency scores in [0, 1] (a map or a 0/1 mask), at ``maps.hr``'s
            size.
        threshold: Saliency threshold, or None for the soft ``1 − saliency`` background.

    Returns:
        ``H×W`` ``uint8`` mask.

    Raises:
        DataError: Size mismatch between ``saliency`` and the class maps.
    """
    hr = maps.hr
    saliency = np.asarray(saliency, dtype=hr.dtype)
    if saliency.shape != hr.shape[1:]:
        raise DataError(f"saliency map of size {saliency.shape} but class maps {hr.shape[1:]}")
    if maps.keys.size and (maps.keys.min() < 1 or maps.keys.max() > 255):
        raise DataError(f"class-map keys {maps.keys.tolist()} outside the ids 1..255")
    if threshold is None:
        background = 1.0 - saliency
    else:
        background = (saliency < threshold).astype(hr.dtype)
    winner = np.concatenate([background[None], hr]).argmax(0)
    lut = np.concatenate([[0], maps.keys]).astype(np.uint8)
    return lut[winner]
