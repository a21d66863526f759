"""What LPCAM's prototypes are made of, measured with the synthetic benchmark's parts.

:func:`part_tags` labels every image position with its part code (head, body, context ...)
for :func:`wsss.maps.lpcam.fit_prototypes` (argument ``tags``), which counts the labels of each
cluster's members; :func:`prototype_composition` turns those counts into the share of each
part in every selected prototype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from wsss.data.base import IGNORE_INDEX, SegmentationDataset
from wsss.data.parts import BODY_FAR, HEAD, PART_NAMES

__all__ = ["COMPOSITION_NAMES", "OTHER_OBJECT", "part_tags", "prototype_composition"]

OTHER_OBJECT = 6  # a head or body pixel of an object of another class
COMPOSITION_NAMES = {**PART_NAMES, OTHER_OBJECT: "other_object", IGNORE_INDEX: "ignore"}
_GROUPS = {"body": ("body_near", "body_far"), "context": ("context_present", "context_absent")}


class _FittedPrototypes(Protocol):
    classes: list[str]
    meta: dict[str, Any]


def part_tags(dataset: SegmentationDataset) -> Callable[[str, int], np.ndarray | None] | None:
    """The part code of every pixel, for the prototypes of one class; None without parts.

    Object parts (head, body) of an object of another class than the one whose prototypes
    are fitted are coded :data:`OTHER_OBJECT`.
    """
    if not dataset.has_parts:
        return None
    cache: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    def tags(sample_id: str, class_index: int) -> np.ndarray | None:
        if sample_id not in cache:  # an image's classes are fitted one after the other
            cache.clear()
            cache[sample_id] = (dataset.load_parts(sample_id), dataset.load_mask(sample_id))
        parts, mask = cache[sample_id]
        if parts is None:
            return None
        codes = np.array(parts, dtype=np.uint8)
        if mask is not None:
            other = (codes >= HEAD) & (codes <= BODY_FAR)
            other &= (mask != class_index + 1) & (mask != IGNORE_INDEX)
            codes[other] = OTHER_OBJECT
        return codes

    return tags


def prototype_composition(prototypes: _FittedPrototypes) -> list[dict[str, Any]]:
    """Part make-up of every selected prototype of prototypes fitted with :func:`part_tags`.

    Each row describes one prototype: ``class``, ``class_index``, ``kind`` (``"class"`` or
    ``"context"``), ``index`` (row in the prototype tensor), ``score`` (``P[:, n]``),
    ``members`` (features in its cluster) and the share of its members on each part:
    ``head``, ``body_near``, ``body_far``, ``body``, ``context_present``, ``context_absent``,
    ``context``, ``background`` (other background), ``other_object`` (an object of another
    class) and ``ignore``. Empty when the prototypes were fitted without tags.
    """
    rows: list[dict[str, Any]] = []
    for n, entry in enumerate(prototypes.meta.get("per_class", [])):
        for kind, key in (("class", "foreground"), ("context", "context")):
            if entry[key] is None:  # class without clustering images
                continue
            selected = [c for c in entry[key]["clusters"] if c["selected"]]
            for index, cluster in enumerate(selected):
                if cluster.get("tags") is None:
                    continue
                rows.append(
                    {
                        "class": prototypes.classes[n],
                        "class_index": n,
                        "kind": kind,
                        "index": index,
                        "score": cluster["score"],
                        "members": cluster["members"],
                        **_shares(cluster["tags"], cluster["members"]),
                    }
                )
    return rows


def _shares(counts: dict[str, int], members: int) -> dict[str, float]:
    """Share of each part among a cluster's ``members`` from its tag counts."""
    total = float(max(members, 1))
    entry = {name: counts.get(str(code), 0) / total for code, name in COMPOSITION_NAMES.items()}
    for group, names in _GROUPS.items():
        entry[group] = sum(entry[name] for name in names)
    return entry
