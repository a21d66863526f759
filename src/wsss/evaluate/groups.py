"""Class-group analysis (P-NOC Tables 1 and 3).

Per foreground class, from the ground truth of a split:

- ``O``: occurrence, the number of images whose label contains the class;
- ``S``: mean relative size, class pixels / image pixels (H·W), over those images (%);
- ``C``: co-occurrence rate, the fraction of those images that contain another class (%);
- ``L``: mean label cardinality (number of classes) of those images.

Classes are grouped into size terciles (by ``S``), frequency terciles (by ``O``) and
user-given groups; each group reports the mean of these properties and of the classes' IoU.
Pearson's correlation relates each property to per-class IoU. Classes that never occur, or
whose IoU is undefined, are left out of groups and correlations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from wsss.errors import ConfigError, DataError

__all__ = ["PROPERTIES", "ClassStats", "class_group_analysis", "pearson"]

PROPERTIES = ("O", "S", "C", "L")
TERCILE_NAMES = {"size": ("small", "mid", "large"), "frequency": ("low", "mid", "high")}


class ClassStats:
    """Streaming per-class statistics of a split's ground truth; mergeable.

    Args:
        num_classes: Number of foreground classes C.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.occurrences = np.zeros(self.num_classes, dtype=np.int64)
        self.size_sum = np.zeros(self.num_classes, dtype=np.float64)
        self.cooccurrences = np.zeros(self.num_classes, dtype=np.int64)
        self.cardinality_sum = np.zeros(self.num_classes, dtype=np.int64)

    def update(self, label: np.ndarray, mask: np.ndarray) -> ClassStats:
        """Add one image: its ``(C,)`` label vector and ``H×W`` segmentation-space mask."""
        present = np.asarray(label).reshape(-1) > 0.5
        if present.size != self.num_classes:
            raise DataError(f"label has {present.size} entries, expected {self.num_classes}")
        mask = np.asarray(mask)
        # index 0 (background) and 255 (ignore) land outside 1..C and are dropped
        pixels = np.bincount(mask.reshape(-1).astype(np.int64), minlength=256)[
            1 : self.num_classes + 1
        ]
        cardinality = int(present.sum())
        self.occurrences += present
        self.size_sum += np.where(present, pixels / mask.size, 0.0)
        self.cooccurrences += present & (cardinality > 1)
        self.cardinality_sum += present * cardinality
        return self

    def merge(self, other: ClassStats) -> ClassStats:
        """Add the statistics of ``other`` in place."""
        self.occurrences += other.occurrences
        self.size_sum += other.size_sum
        self.cooccurrences += other.cooccurrences
        self.cardinality_sum += other.cardinality_sum
        return self

    def properties(self) -> dict[str, np.ndarray]:
        """``{"O", "S", "C", "L"}`` per class (``S`` and ``C`` in %); NaN for absent classes."""
        occ = self.occurrences.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "O": occ,
                "S": np.where(occ > 0, 100.0 * self.size_sum / occ, np.nan),
                "C": np.where(occ > 0, 100.0 * self.cooccurrences / occ, np.nan),
                "L": np.where(occ > 0, self.cardinality_sum / occ, np.nan),
            }


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's correlation of two equal-length vectors; NaN when either is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    den = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / den) if den > 0 else float("nan")


def class_group_analysis(
    stats: ClassStats,
    iou: np.ndarray,
    class_names: Sequence[str],
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict:
    """Group means and correlations of class properties and IoU.

    Args:
        stats: Statistics of the split's ground truth.
        iou: ``(C,)`` per foreground class IoU (any unit, e.g. %); NaN where undefined.
        class_names: The C foreground class names.
        groups: Optional user groups, name → class names.

    Returns:
        ``{"classes": {name: {O, S, C, L, iou}}, "groups": {"size": {...}, "frequency":
        {...}, "user": {...}}, "correlation": {prop: {prop or "iou": r}}}``; each group holds
        ``classes`` and the means of ``O, S, C, L, iou``. NaN marks undefined values.
    """
    names = list(class_names)
    iou = np.asarray(iou, dtype=np.float64).reshape(-1)
    if len(names) != stats.num_classes or iou.size != stats.num_classes:
        raise ValueError(
            f"{stats.num_classes} classes in stats, {len(names)} names, {iou.size} IoU values"
        )
    values = {**stats.properties(), "iou": iou}
    usable = np.flatnonzero((stats.occurrences > 0) & np.isfinite(iou))

    def describe(members: np.ndarray) -> dict:
        out: dict = {"classes": [names[i] for i in members]}
        for key, v in values.items():
            out[key] = float(v[members].mean()) if len(members) else float("nan")
        return out

    result: dict = {
        "classes": {
            names[i]: {k: float(v[i]) for k, v in values.items()} for i in range(len(names))
        },
        "groups": {},
    }
    for kind, prop in (("size", "S"), ("frequency", "O")):
        order = usable[np.argsort(values[prop][usable], kind="stable")]
        result["groups"][kind] = {
            label: describe(part)
            for label, part in zip(TERCILE_NAMES[kind], np.array_split(order, 3), strict=True)
        }
    if groups:
        index = {name: i for i, name in enumerate(names)}
        user = {}
        for group, members in groups.items():
            unknown = [m for m in members if m not in index]
            if unknown:
                raise ConfigError(f"class group {group!r} names unknown classes {unknown}")
            ids = np.array([index[m] for m in members], dtype=np.int64)
            user[group] = describe(ids[np.isin(ids, usable)])
        result["groups"]["user"] = user
    result["correlation"] = {
        prop: {key: pearson(values[prop][usable], v[usable]) for key, v in values.items()}
        for prop in PROPERTIES
    }
    return result
