"""Structural statistics of a generated dataset, to check it against its configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsss.data.synthetic.config import SynthConfig
from wsss.data.synthetic.scene import SynthSample, partner


@dataclass(frozen=True)
class ImageRecord:
    """What the statistics need from one image (small, so workers can send it back)."""

    split: str
    height: int
    width: int
    classes: tuple[int, ...]  # one entry per object
    head_px: tuple[int, ...]
    body_px: tuple[int, ...]
    near_px: tuple[int, ...]
    area_px: tuple[int, ...]
    reach: tuple[float, ...]
    context: tuple[tuple[int, bool], ...]

    @classmethod
    def of(cls, split: str, sample: SynthSample) -> ImageRecord:
        """Summarise a rendered sample."""
        objs = sample.objects
        return cls(
            split=split,
            height=int(sample.mask.shape[0]),
            width=int(sample.mask.shape[1]),
            classes=tuple(o.cls for o in objs),
            head_px=tuple(o.head_px for o in objs),
            body_px=tuple(o.near_px + o.far_px for o in objs),
            near_px=tuple(o.near_px for o in objs),
            area_px=tuple(o.area_px for o in objs),
            reach=tuple(o.reach for o in objs),
            context=tuple(sorted(sample.context.items())),
        )


@dataclass
class SynthStats:
    """Statistics of a generated dataset (rates are fractions in [0, 1]).

    Attributes:
        images: Number of images per split.
        height_range: Smallest and largest image height.
        width_range: Smallest and largest image width.
        objects_per_image: Mean number of objects.
        class_occurrence: Class name → number of images containing it.
        class_cooccurrence: Class name → share of its images that contain another class (%C).
        multi_label_rate: Share of images with two or more distinct classes.
        partner_rate: Among images with two or more objects, the share containing a class
            together with its co-occurrence partner.
        context_with_class: Context class → share of its images showing its texture.
        context_without_class: Context class → share of the other images showing its texture.
        head_body_ratio: Mean over objects of visible head pixels / visible body pixels.
        near_share: Share of visible body pixels near the head.
        object_size: Object area / image area: ``mean, min, p10, p50, p90, max``.
        body_reach: Farthest visible body pixel from the head rim, in pixels:
            ``mean, min, p10, p50, p90, max``.
    """

    images: dict[str, int]
    height_range: tuple[int, int]
    width_range: tuple[int, int]
    objects_per_image: float
    class_occurrence: dict[str, int]
    class_cooccurrence: dict[str, float]
    multi_label_rate: float
    partner_rate: float
    context_with_class: dict[str, float]
    context_without_class: dict[str, float]
    head_body_ratio: float
    near_share: float
    object_size: dict[str, float]
    body_reach: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthStats:
        """Inverse of :meth:`to_dict`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
        )


def _summary(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return dict.fromkeys(("mean", "min", "p10", "p50", "p90", "max"), 0.0)
    q = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {
        "mean": round(float(values.mean()), 4),
        **{
            k: round(float(v), 4)
            for k, v in zip(("min", "p10", "p50", "p90", "max"), q, strict=True)
        },
    }


def _rate(hits: int, total: int) -> float:
    return round(hits / total, 4) if total else 0.0


def summarize(records: list[ImageRecord], config: SynthConfig) -> SynthStats:
    """Aggregate per-image records into :class:`SynthStats`."""
    names = config.names
    k = config.num_classes
    n = len(records)
    present = np.zeros((n, k), bool)
    for i, r in enumerate(records):
        present[i, list(r.classes)] = True
    distinct = present.sum(1)
    crowded = [i for i, r in enumerate(records) if len(r.classes) >= 2]
    partnered = 0
    for i in crowded:
        cls = set(records[i].classes)
        partnered += any(partner(c, k) in cls for c in cls)

    ctx_with, ctx_without = {}, {}
    for c in config.context_classes:
        drawn = np.array([dict(r.context)[c] for r in records], bool)
        ctx_with[names[c]] = _rate(int((drawn & present[:, c]).sum()), int(present[:, c].sum()))
        ctx_without[names[c]] = _rate(
            int((drawn & ~present[:, c]).sum()), int((~present[:, c]).sum())
        )

    head = np.array([v for r in records for v in r.head_px], np.float64)
    body = np.array([v for r in records for v in r.body_px], np.float64)
    near = np.array([v for r in records for v in r.near_px], np.float64)
    size = np.array([a / (r.height * r.width) for r in records for a in r.area_px])
    reach = np.array([v for r in records for v in r.reach])
    splits = {s: sum(r.split == s for r in records) for s in config.split_sizes()}
    return SynthStats(
        images=splits,
        height_range=(min(r.height for r in records), max(r.height for r in records)),
        width_range=(min(r.width for r in records), max(r.width for r in records)),
        objects_per_image=round(float(np.mean([len(r.classes) for r in records])), 4),
        class_occurrence={names[c]: int(present[:, c].sum()) for c in range(k)},
        class_cooccurrence={
            names[c]: _rate(int((present[:, c] & (distinct >= 2)).sum()), int(present[:, c].sum()))
            for c in range(k)
        },
        multi_label_rate=_rate(int((distinct >= 2).sum()), n),
        partner_rate=_rate(partnered, len(crowded)),
        context_with_class=ctx_with,
        context_without_class=ctx_without,
        head_body_ratio=round(float(np.mean(head / np.maximum(body, 1.0))), 4) if n else 0.0,
        near_share=_rate(int(near.sum()), int(body.sum())),
        object_size=_summary(size),
        body_reach=_summary(reach),
    )
