"""LPCAM: class activation maps from clustered local prototypes (METHODS.md §5).

Fitting (:func:`fit_prototypes`): for each class n, the last-stage features of the images that
contain n are split by n's CAM at ``tau`` into a foreground and a context set; each set is
clustered with cosine k-means, and the classifier's 1×1 head ``W`` acts as the evaluator:
``P = softmax_classes(centres · Wᵀ)``. Foreground centres with ``P[:, n] > mu_f`` become the
class prototypes (the best one when none passes), context centres with
``mu_low < P[:, n] < mu_b`` the context prototypes.

Maps (:func:`lpcam_maps_batch`, registered as map methods ``lpcam`` and ``lpcam_f``): per
TTA scale, ``g = F(x) + hflip(F(hflip x))`` and :func:`lpcam_map` gives
``ReLU(mean_q cos(g, q) − mean_b cos(g, b))`` over class prototypes ``q`` and context
prototypes ``b`` (a class without context prototypes gets ``ReLU(mean_q cos(g, q))``, see
:func:`lpcam_map` on that ReLU); scales are aggregated and max-normalised exactly as CAM
maps. The mean of cosines with unit prototypes is linear in the unit-normalised feature ``ĝ``,
so both means fold into one ``K×D`` matrix (:meth:`Prototypes.head`: block-averaging matrix
times the stacked unit prototypes of all requested classes) and every class of an image costs
one matrix product with ``ĝ``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor
from tqdm.auto import tqdm

from wsss.data.base import IGNORE_INDEX, SegmentationDataset
from wsss.data.parts import PART_NAMES
from wsss.data.transforms import normalize, to_tensor
from wsss.errors import ConfigError, DataError
from wsss.io.atomic import atomic_path
from wsss.io.maps import ClassMaps, load_class_maps
from wsss.maps.cam import predicted_classes
from wsss.maps.kmeans import cluster_means, cosine_kmeans
from wsss.maps.methods import MAP_METHODS
from wsss.maps.tta import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_SCALES,
    as_image_tensor,
    class_maps_by_size,
)
from wsss.models.classifier import CAMClassifier

__all__ = [
    "PrototypeConfig",
    "Prototypes",
    "class_scores",
    "fit_prototypes",
    "load_prototypes",
    "lpcam_map",
    "lpcam_maps",
    "lpcam_maps_batch",
    "prototype_composition",
    "save_prototypes",
    "select_prototypes",
]

log = logging.getLogger(__name__)

FORMAT = "wsss.lpcam.prototypes"
OTHER_OBJECT = 6  # composition code: a head or body pixel of an object of another class
COMPOSITION_NAMES = {**PART_NAMES, OTHER_OBJECT: "other_object", IGNORE_INDEX: "ignore"}
_GROUPS = {"body": ("body_near", "body_far"), "context": ("context_present", "context_absent")}


@dataclass
class PrototypeConfig:
    """Settings of :func:`fit_prototypes`; defaults follow the LPCAM code on VOC.

    Attributes:
        k: Clusters per set (VOC 12, COCO 20).
        tau: CAM threshold splitting foreground (``> tau``) from context (``< tau``).
        mu_f: Class prototypes need ``P[:, n] > mu_f``.
        mu_b: Context prototypes need ``mu_low < P[:, n] < mu_b`` (COCO 0.5).
        mu_low: Lower bound of context scores (COCO 0).
        per_class: Images sampled per class; None uses every image of the class.
        replace: Sample with replacement (COCO reference: 100 per class, seed 666).
        seed: Seed of image sampling, subsampling and k-means.
        init: k-means initialisation, ``"random"`` (reference) or ``"k-means++"``.
        update: k-means centre update, ``"reference"`` (raw mean) or ``"normalized"``.
        stop: k-means stopping rule, ``"reference"`` (``(Σ‖Δc‖)² < tol``) or ``"shift"``.
        tol: Tolerance of ``stop`` (reference: 5). The reference rule is in feature units:
            5 suits ResNet-50 layer-4 features, while small-norm features (an untrained or
            another backbone) can stop it after one iteration; ``stop="shift"`` (on unit
            centres, e.g. ``tol=1e-4``) is scale free.
        max_iter: k-means iteration cap (the reference has none).
        max_features: Cap on the features kept per set (uniform reservoir sample, seeded);
            None keeps all.
        classes_per_pass: Classes whose sets are collected in one pass over the images;
            None collects all classes in one pass (each image's features computed once).
    """

    k: int = 12
    tau: float = 0.1
    mu_f: float = 0.9
    mu_b: float = 0.9
    mu_low: float = 0.05
    per_class: int | None = None
    replace: bool = False
    seed: int = 0
    init: Literal["random", "k-means++"] = "random"
    update: Literal["reference", "normalized"] = "reference"
    stop: Literal["reference", "shift"] = "reference"
    tol: float = 5.0
    max_iter: int = 100
    max_features: int | None = None
    classes_per_pass: int | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"lpcam k must be >= 1, got {self.k}")
        if not 0.0 <= self.mu_low < self.mu_b <= 1.0 or not 0.0 <= self.mu_f <= 1.0:
            raise ConfigError(
                f"lpcam thresholds need 0 <= mu_low < mu_b <= 1 and 0 <= mu_f <= 1, got "
                f"mu_f={self.mu_f}, mu_b={self.mu_b}, mu_low={self.mu_low}"
            )
        choices = {
            "init": ("random", "k-means++"),
            "update": ("reference", "normalized"),
            "stop": ("reference", "shift"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"lpcam {name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        for name in ("per_class", "max_features", "classes_per_pass"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"lpcam {name} must be >= 1 or None, got {value}")


@dataclass
class Prototypes:
    """Class and context prototypes of every class, with the metadata of their fitting.

    Attributes:
        foreground: Per class, ``K'_n×D`` class prototypes (raw feature-space centres).
        context: Per class, ``K''_n×D`` context prototypes (possibly none).
        classes: Foreground class names.
        meta: JSON-serialisable fitting record (settings, counts, scores, compositions).
    """

    foreground: list[Tensor]
    context: list[Tensor]
    classes: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not len(self.foreground) == len(self.context) == len(self.classes):
            raise ValueError(
                f"{len(self.classes)} classes but {len(self.foreground)} foreground and "
                f"{len(self.context)} context prototype sets"
            )

    @property
    def num_classes(self) -> int:
        """Number of foreground classes C."""
        return len(self.classes)

    @property
    def feature_dim(self) -> int:
        """Feature width D."""
        return self.foreground[0].shape[1]

    def head(self, class_indices: Sequence[int], context: bool = True) -> Tensor:
        """LPCAM as a linear map on unit-normalised features.

        Row ``j`` is the mean of the unit class prototypes of ``class_indices[j]`` minus (with
        ``context``) the mean of its unit context prototypes, so ``head @ ĝ = FG − BG``. A
        class without class prototypes gets a zero row.

        Args:
            class_indices: Classes (classification space, 0..C−1) to produce rows for.
            context: Subtract the context term (LPCAM); False gives LPCAM-F.

        Returns:
            ``len(class_indices)×D`` ``float32`` matrix.
        """
        blocks: list[Tensor] = []
        rows: list[int] = []
        values: list[float] = []
        for row, n in enumerate(class_indices):
            if not 0 <= n < self.num_classes:
                raise ConfigError(f"class index {n} outside 0..{self.num_classes - 1}")
            sets = [(self.foreground[n], 1.0)]
            if context and len(self.foreground[n]):
                sets.append((self.context[n], -1.0))
            for protos, sign in sets:
                m = len(protos)
                if m:
                    blocks.append(protos.float())
                    rows += [row] * m
                    values += [sign / m] * m
        if not blocks:
            return torch.zeros(len(class_indices), self.feature_dim)
        # Block-averaging matrix: +1/K'_n on class n's prototypes, −1/K''_n on its context ones.
        averaging = torch.zeros(len(class_indices), len(rows))
        averaging[torch.tensor(rows), torch.arange(len(rows))] = torch.tensor(values)
        return averaging @ F.normalize(torch.cat(blocks), dim=1)

    def has_context(self, class_indices: Sequence[int], context: bool = True) -> Tensor:
        """Which rows of :meth:`head` subtract a context term (``bool``, one per class)."""
        return torch.tensor(
            [
                context and len(self.foreground[n]) > 0 and len(self.context[n]) > 0
                for n in class_indices
            ],
            dtype=torch.bool,
        )


def class_scores(centers: Tensor, weights: Tensor) -> Tensor:
    """The classifier as evaluator: ``softmax over classes of centres · Wᵀ``.

    Args:
        centers: ``K×D`` cluster centres in feature space.
        weights: ``C×D`` classifier weights (the 1×1 head).

    Returns:
        ``K×C`` class probabilities of each centre.
    """
    return torch.softmax(centers.float() @ weights.float().T, dim=1)


@dataclass
class Selection:
    """Outcome of :func:`select_prototypes` for one class.

    Attributes:
        foreground: Indices of the foreground centres kept as class prototypes.
        context: Indices of the context centres kept as context prototypes.
        foreground_scores: ``P[:, n]`` of every foreground centre.
        context_scores: ``P[:, n]`` of every context centre.
        fallback: True when no foreground centre passed ``mu_f`` and the best was taken.
    """

    foreground: list[int]
    context: list[int]
    foreground_scores: list[float]
    context_scores: list[float]
    fallback: bool


def select_prototypes(
    fg_centers: Tensor,
    ctx_centers: Tensor,
    weights: Tensor,
    class_index: int,
    mu_f: float = 0.9,
    mu_b: float = 0.9,
    mu_low: float = 0.05,
) -> Selection:
    """Choose the class and context prototypes of class ``class_index`` among the centres.

    Class prototypes: foreground centres with ``P[:, n] > mu_f``; when none passes, the one
    with the highest ``P[:, n]`` (the LPCAM code does this on COCO and crashes on VOC).
    Context prototypes: context centres with ``mu_low < P[:, n] < mu_b``.
    """
    fg_scores = class_scores(fg_centers, weights)[:, class_index] if len(fg_centers) else None
    ctx_scores = class_scores(ctx_centers, weights)[:, class_index] if len(ctx_centers) else None
    fg: list[int] = []
    fallback = False
    if fg_scores is not None:
        fg = torch.nonzero(fg_scores > mu_f).flatten().tolist()
        if not fg:
            fg = [int(fg_scores.argmax())]
            fallback = True
    ctx: list[int] = []
    if ctx_scores is not None:
        ctx = torch.nonzero((ctx_scores > mu_low) & (ctx_scores < mu_b)).flatten().tolist()
    return Selection(
        foreground=fg,
        context=ctx,
        foreground_scores=[] if fg_scores is None else fg_scores.tolist(),
        context_scores=[] if ctx_scores is None else ctx_scores.tolist(),
        fallback=fallback,
    )


def lpcam_map(features: Tensor, head: Tensor, rectify: Tensor | None = None) -> Tensor:
    """``ReLU(head · ĝ)`` at every position: the LPCAM (or LPCAM-F) maps before normalisation.

    The LPCAM code applies the ReLU only to ``FG − BG``, i.e. to classes with context
    prototypes, and leaves ``FG`` alone for the others (METHODS.md §5 is ambiguous on this).
    ``wsss`` rectifies every row by default, a deliberate fix: a map is a non-negative score,
    and an all-negative one would flip sign under the max normalisation. With the
    reference's post-ReLU ResNet features and prototypes every cosine is non-negative and
    the two agree; they differ for signed features or prototypes (e.g. other backbones).
    ``rectify`` chooses the rows; :func:`lpcam_maps_batch` passes the reference's choice
    (:meth:`Prototypes.has_context`) with ``relu_without_context=False``.

    Args:
        features: ``D×h×w`` or ``N×D×h×w`` features (for TTA, the sum of the features of an
            image and of its un-flipped flip).
        head: ``K×D`` matrix from :meth:`Prototypes.head`.
        rectify: ``K`` booleans, the rows to pass through the ReLU; None: every row.

    Returns:
        ``K×h×w`` (or ``N×K×h×w``) maps, non-negative where rectified.
    """
    unit = F.normalize(features.float(), dim=-3)
    head = head.to(device=unit.device, dtype=unit.dtype)
    maps = torch.einsum("kd,...dhw->...khw", head, unit)
    if rectify is None:
        return torch.relu(maps)
    return torch.where(rectify.to(maps.device)[:, None, None], torch.relu(maps), maps)


def prototype_composition(prototypes: Prototypes) -> list[dict[str, Any]]:
    """Part make-up of every selected prototype, from the synthetic benchmark's annotation.

    Each row describes one prototype: ``class``, ``class_index``, ``kind`` (``"class"`` or
    ``"context"``), ``index`` (row in the prototype tensor), ``score`` (``P[:, n]``),
    ``members`` (features in its cluster) and the share of its members on each part:
    ``head``, ``body_near``, ``body_far``, ``body``, ``context_present``, ``context_absent``,
    ``context``, ``background`` (other background), ``other_object`` (an object of another
    class) and ``ignore``. Empty when the prototypes were fitted without part annotation.
    """
    rows: list[dict[str, Any]] = []
    for n, entry in enumerate(prototypes.meta.get("per_class", [])):
        for kind, key in (("class", "foreground"), ("context", "context")):
            if entry[key] is None:  # class without clustering images
                continue
            selected = [c for c in entry[key]["clusters"] if c["selected"]]
            for index, cluster in enumerate(selected):
                if cluster.get("composition") is None:
                    continue
                rows.append(
                    {
                        "class": prototypes.classes[n],
                        "class_index": n,
                        "kind": kind,
                        "index": index,
                        "score": cluster["score"],
                        "members": cluster["members"],
                        **cluster["composition"],
                    }
                )
    return rows


def _cluster_composition(labels: Tensor, codes: Tensor, k: int) -> list[dict[str, float]]:
    """Share of each composition code among the members of each of ``k`` clusters."""
    counts = torch.bincount(labels * 256 + codes.long(), minlength=k * 256).view(k, 256)
    members = counts.sum(dim=1).clamp_min(1).double()
    shares = counts.double() / members.unsqueeze(1)
    out = []
    for row in shares:
        entry = {name: float(row[code]) for code, name in COMPOSITION_NAMES.items()}
        for group, names in _GROUPS.items():
            entry[group] = sum(entry[name] for name in names)
        out.append(entry)
    return out


class _Reservoir:
    """Feature rows (with composition codes) arriving image by image.

    With a ``capacity``, keeps a uniform sample without replacement of at most ``capacity``
    rows (the rows with the smallest random keys); it holds at most ``2 × capacity`` rows
    plus one image's. Without one, keeps every row.
    """

    def __init__(self, capacity: int | None, generator: torch.Generator) -> None:
        self.capacity = capacity
        self.generator = generator
        self.pending: list[tuple[Tensor, Tensor, Tensor]] = []
        self.pending_rows = 0
        self.seen = 0

    def add(self, rows: Tensor, codes: Tensor) -> None:
        self.seen += len(rows)
        # Random keys only matter when sampling; the smallest ``capacity`` keys are kept.
        keys = torch.rand(len(rows), generator=self.generator) if self.capacity else torch.empty(0)
        self.pending.append((rows, codes, keys))
        self.pending_rows += len(rows)
        if self.capacity is not None and self.pending_rows >= 2 * self.capacity:
            self._merge()

    def _merge(self) -> None:
        rows, codes, keys = (torch.cat(parts) for parts in zip(*self.pending, strict=True))
        if self.capacity is not None and len(rows) > self.capacity:
            keep = torch.topk(keys, self.capacity, largest=False).indices.sort().values
            rows, codes, keys = rows[keep], codes[keep], keys[keep]
        self.pending = [(rows, codes, keys)]
        self.pending_rows = len(rows)

    def collect(self, dim: int) -> tuple[Tensor, Tensor]:
        """All kept rows and codes (the reservoir is emptied)."""
        if not self.pending:
            return torch.zeros(0, dim), torch.zeros(0, dtype=torch.uint8)
        self._merge()
        rows, codes, _ = self.pending.pop()
        return rows, codes


def _sample_images(
    image_classes: list[np.ndarray], num_classes: int, config: PrototypeConfig
) -> list[np.ndarray]:
    """Per class, the indices of its clustering images (with multiplicity when sampling with
    replacement)."""
    rng = np.random.default_rng(config.seed)
    per_class: list[list[int]] = [[] for _ in range(num_classes)]
    for i, present in enumerate(image_classes):
        for n in present:
            per_class[n].append(i)
    chosen = []
    for members in per_class:
        members_arr = np.asarray(members, dtype=np.int64)
        n = config.per_class
        if n is not None and len(members_arr) and (config.replace or n < len(members_arr)):
            members_arr = np.sort(rng.choice(members_arr, size=n, replace=config.replace))
        chosen.append(members_arr)
    return chosen


@torch.no_grad()
def _features(model: CAMClassifier, image: np.ndarray, device: torch.device) -> Tensor:
    x = normalize(to_tensor(image)).unsqueeze(0).to(device)
    return model(x, with_features=True).features[0].float()


def _to_grid(values: np.ndarray, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of an ``H×W`` array to the feature grid."""
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="nearest")[0, 0]


def _cam_of(cam_dir: Path, sample_id: str, class_index: int, shape: tuple[int, int]) -> np.ndarray:
    path = cam_dir / f"{sample_id}.npz"
    maps = load_class_maps(path)
    hits = np.nonzero(maps.keys == class_index + 1)[0]
    if len(hits) == 0:
        raise DataError(
            f"{path}: no map for class id {class_index + 1} (stored: {maps.keys.tolist()}); "
            "were the CAMs made for this split and label set?"
        )
    hr = maps.hr[hits[0]]
    if hr.shape != shape:
        raise DataError(f"{path}: full-resolution map is {hr.shape}, image is {shape}")
    return hr


def _composition_codes(
    parts: np.ndarray | None, mask: np.ndarray | None, class_index: int, size: tuple[int, int]
) -> Tensor | None:
    """Per feature-grid position: part code, with object parts of other classes re-coded."""
    if parts is None:
        return None
    codes = _to_grid(parts, size)
    if mask is not None:
        seg = _to_grid(mask, size)
        other = (codes >= 1) & (codes <= 3) & (seg != class_index + 1) & (seg != IGNORE_INDEX)
        codes[other] = OTHER_OBJECT
    return codes.to(torch.uint8)


def fit_prototypes(
    model: CAMClassifier,
    dataset: SegmentationDataset,
    cam_dir: str | os.PathLike,
    config: PrototypeConfig | None = None,
    device: torch.device | str | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
) -> Prototypes:
    """Fit the class and context prototypes of every class of ``dataset``.

    Args:
        model: Trained classifier; its last-stage features are clustered and its head
            ``W`` (``C×D``) scores the centres.
        dataset: Clustering images with image labels (the part annotation, when present,
            feeds the composition diagnostic).
        cam_dir: Folder of CAM class-map files ``<id>.npz`` for these images; the
            full-resolution map of class n splits the features.
        config: Fitting settings.
        device: Where to run the model and k-means; default: the model's device.
        checkpoint: Path of the classifier checkpoint, recorded in the metadata.
        progress: Show progress bars.

    Returns:
        The prototypes. Prototypes are the raw means of their clusters' members, in
        feature space, so the classifier can score them.

    Memory: each image's features are computed once per pass (scale 1, no flip) and only
    the positions of the sets are kept: per pass, about ``2 × classes_per_pass ×
    min(set size, max_features) × D × 4`` bytes, plus one concatenation copy of a set before
    clustering (e.g. VOC ``train``, 32×32 grids, D = 2048: ~8 KB per position).
    """
    config = config or PrototypeConfig()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    cam_dir = Path(cam_dir)
    if not cam_dir.is_dir():
        raise DataError(f"{cam_dir}: CAM folder not found (run CAM inference first)")
    num_classes = dataset.num_classes
    if model.num_classes != num_classes:
        raise ConfigError(
            f"classifier has {model.num_classes} classes, dataset {dataset.root} has {num_classes}"
        )
    model = model.to(device).eval()
    weights = model.head.weight.detach().flatten(1).float().cpu()
    dim = weights.shape[1]
    use_parts = dataset.has_parts

    image_classes = [
        np.flatnonzero(dataset.load_label(i) > 0.5)
        for i in tqdm(dataset.ids, desc="lpcam labels", disable=not progress, leave=False)
    ]
    sampled = _sample_images(image_classes, num_classes, config)
    todo = [n for n in range(num_classes) if len(sampled[n])]
    for n in set(range(num_classes)) - set(todo):
        log.warning(
            "lpcam: class %r has no clustering image; it gets no prototype", dataset.classes[n]
        )
    step = config.classes_per_pass or max(len(todo), 1)
    gen = torch.Generator().manual_seed(config.seed)

    foreground = [torch.zeros(0, dim) for _ in range(num_classes)]
    context = [torch.zeros(0, dim) for _ in range(num_classes)]
    per_class: list[dict[str, Any]] = [
        {"class": name, "images": 0, "foreground": None, "context": None}
        for name in dataset.classes
    ]
    for start in range(0, len(todo), step):
        group = todo[start : start + step]
        sets = {
            (n, kind): _Reservoir(config.max_features, gen)
            for n in group
            for kind in ("foreground", "context")
        }
        uses: dict[int, list[tuple[int, int]]] = {}
        for n in group:
            per_class[n]["images"] = len(sampled[n])
            indices, repeats = np.unique(sampled[n], return_counts=True)
            for i, m in zip(indices.tolist(), repeats.tolist(), strict=True):
                uses.setdefault(i, []).append((n, m))
        for i in tqdm(sorted(uses), desc="lpcam features", disable=not progress):
            sample_id = dataset.ids[i]
            image = dataset.load_image(sample_id)
            feats = _features(model, image, device).cpu()
            size = (feats.shape[1], feats.shape[2])
            flat = feats.flatten(1).T  # positions × D
            parts = dataset.load_parts(sample_id) if use_parts else None
            mask = dataset.load_mask(sample_id) if use_parts else None
            for n, repeat in uses[i]:
                cam = _to_grid(_cam_of(cam_dir, sample_id, n, image.shape[:2]), size).flatten()
                codes = _composition_codes(parts, mask, n, size)
                codes = (
                    codes.flatten()
                    if codes is not None
                    else torch.zeros_like(cam, dtype=torch.uint8)
                )
                for kind, keep in (("foreground", cam > config.tau), ("context", cam < config.tau)):
                    for _ in range(repeat):
                        sets[(n, kind)].add(flat[keep], codes[keep])
        for n in group:
            for kind, out in (("foreground", foreground), ("context", context)):
                reservoir = sets.pop((n, kind))
                rows, codes = reservoir.collect(dim)
                out[n], per_class[n][kind] = _cluster_set(
                    rows, codes if use_parts else None, config, device, dataset.classes[n], kind
                )
                per_class[n][kind]["features"] = reservoir.seen
            selection = select_prototypes(
                foreground[n], context[n], weights, n, config.mu_f, config.mu_b, config.mu_low
            )
            if selection.fallback:
                log.warning(
                    "lpcam: no foreground centre of class %r scores above mu_f=%s; using the "
                    "best one (P=%.3f)",
                    dataset.classes[n],
                    config.mu_f,
                    max(selection.foreground_scores),
                )
            _record_selection(per_class[n], selection)
            foreground[n] = foreground[n][selection.foreground]
            context[n] = context[n][selection.context]

    meta = {
        "format": FORMAT,
        "version": 1,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "dataset": {"root": str(dataset.root), "split": dataset.split},
        "classes": list(dataset.classes),
        "feature_dim": dim,
        "config": asdict(config),
        "parts": use_parts,
        "per_class": per_class,
    }
    return Prototypes(
        foreground=foreground, context=context, classes=list(dataset.classes), meta=meta
    )


def _cluster_set(
    rows: Tensor,
    codes: Tensor | None,
    config: PrototypeConfig,
    device: torch.device,
    class_name: str,
    kind: str,
) -> tuple[Tensor, dict[str, Any]]:
    """k-means on one set; returns the centres (member means) and the set's record."""
    record: dict[str, Any] = {"clustered": len(rows), "clusters": []}
    if len(rows) == 0:
        log.warning("lpcam: class %r has an empty %s set", class_name, kind)
        return rows, record
    k = min(config.k, len(rows))
    if k < config.k:
        log.warning(
            "lpcam: class %r %s set has %d features, fewer than k=%d",
            class_name,
            kind,
            len(rows),
            config.k,
        )
    result = cosine_kmeans(
        rows,
        k,
        init=config.init,
        max_iter=config.max_iter,
        tol=config.tol,
        seed=config.seed,
        update=config.update,
        stop=config.stop,
        device=device,
    )
    labels = result.labels.cpu()
    centers = cluster_means(rows, labels, k)
    members = torch.bincount(labels, minlength=k).tolist()
    composition = _cluster_composition(labels, codes, k) if codes is not None else [None] * k
    record.update(
        k=k,
        n_iter=result.n_iter,
        converged=result.converged,
        objective=result.objective,
        clusters=[
            {"members": m, "composition": c} for m, c in zip(members, composition, strict=True)
        ],
    )
    if not result.converged:
        log.warning(
            "lpcam: k-means on class %r %s set stopped at max_iter=%d",
            class_name,
            kind,
            config.max_iter,
        )
    return centers, record


def _record_selection(entry: dict[str, Any], selection: Selection) -> None:
    for kind, scores, chosen in (
        ("foreground", selection.foreground_scores, selection.foreground),
        ("context", selection.context_scores, selection.context),
    ):
        for j, cluster in enumerate(entry[kind]["clusters"]):
            cluster["score"] = scores[j]
            cluster["selected"] = j in chosen
        entry[kind]["selected"] = len(chosen)
    entry["fallback"] = selection.fallback


def save_prototypes(path: str | os.PathLike, prototypes: Prototypes) -> None:
    """Write prototypes as safetensors (``class_{n}_fg``, ``class_{n}_ctx``) atomically.

    The metadata JSON (fitting settings, classifier checkpoint, counts, scores,
    compositions) is stored in the file's header under ``wsss``.
    """
    tensors = {}
    for n in range(prototypes.num_classes):
        tensors[f"class_{n}_fg"] = prototypes.foreground[n].float().contiguous().cpu()
        tensors[f"class_{n}_ctx"] = prototypes.context[n].float().contiguous().cpu()
    meta = {**prototypes.meta, "format": FORMAT, "classes": list(prototypes.classes)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"wsss": json.dumps(meta)})


def load_prototypes(path: str | os.PathLike) -> Prototypes:
    """Read prototypes written by :func:`save_prototypes`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prototype file not found (run `wsss lpcam fit`)")
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
        meta = json.loads(header["wsss"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a wsss prototype file ({type(e).__name__}: {e})") from e
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a wsss prototype file (format {meta.get('format')!r})")
    classes = list(meta["classes"])
    try:
        foreground = [tensors[f"class_{n}_fg"] for n in range(len(classes))]
        context = [tensors[f"class_{n}_ctx"] for n in range(len(classes))]
    except KeyError as e:
        raise DataError(f"{path}: prototype file lacks tensor {e.args[0]}") from None
    return Prototypes(foreground=foreground, context=context, classes=classes, meta=meta)


def _as_prototypes(prototypes: Prototypes | str | os.PathLike) -> Prototypes:
    return prototypes if isinstance(prototypes, Prototypes) else load_prototypes(prototypes)


def lpcam_maps_batch(
    model: CAMClassifier,
    images: Sequence[Tensor],
    class_indices: Sequence[Sequence[int] | None],
    *,
    prototypes: Prototypes | str | os.PathLike,
    context: bool = True,
    scales: Sequence[float] = DEFAULT_SCALES,
    threshold: float = 0.5,
    device: torch.device | str | None = None,
    amp: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    relu_without_context: bool = True,
) -> list[ClassMaps]:
    """LPCAM (or, with ``context=False``, LPCAM-F) maps of several images, like CAM maps.

    Args:
        model: The classifier whose features the prototypes were fitted on.
        images: ``3×H×W`` ``uint8`` RGB images (any sizes; equal sizes share forward passes).
        class_indices: Per image, the classes (0..C−1) to keep, or None for the classes the
            model predicts.
        prototypes: Fitted prototypes or the path of a prototype file.
        context: Subtract the context term.
        scales: TTA scales.
        threshold: Probability threshold for predicted classes.
        device: Where the model runs; default its current device.
        amp: Autocast the backbone on CUDA (similarities are computed in float32).
        max_pixels: Cap on input pixels per forward pass.
        relu_without_context: Also rectify classes without context prototypes (and every
            class of LPCAM-F); False follows the LPCAM code, which rectifies only
            ``FG − BG`` (see :func:`lpcam_map`; its maps can then be negative, and an
            all-negative one comes out sign-flipped from the max normalisation, as there).

    Returns:
        One :class:`ClassMaps` per image: keys = class index + 1, channels max-normalised.
    """
    if len(images) != len(class_indices):
        raise ValueError(f"{len(images)} images but {len(class_indices)} class lists")
    prototypes = _as_prototypes(prototypes)
    if prototypes.num_classes != model.num_classes or prototypes.feature_dim != model.feature_dim:
        raise ConfigError(
            f"prototypes are for {prototypes.num_classes} classes × {prototypes.feature_dim} "
            f"features, the classifier has {model.num_classes} × {model.feature_dim}; fit them "
            "with this checkpoint"
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    images = [as_image_tensor(im) for im in images]
    classes = [None if c is None else sorted({int(n) for n in c}) for c in class_indices]
    unknown = [i for i, c in enumerate(classes) if c is None]
    if unknown:
        found = predicted_classes(
            model, [images[i] for i in unknown], threshold, device=device, amp=amp
        )
        for i, c in zip(unknown, found, strict=True):
            classes[i] = c

    def features(x: Tensor) -> Tensor:
        return model(x, with_features=True).features

    def make_pass(union: list[int]) -> tuple[Callable, Callable]:
        head = prototypes.head(union, context=context).to(device)
        rectify = None if relu_without_context else prototypes.has_context(union, context)

        def merge(a: Tensor, b: Tensor) -> Tensor:
            # Features of the image and of its flip are summed before the cosine.
            return lpcam_map(a + b, head, rectify)

        return features, merge

    return class_maps_by_size(
        images, classes, make_pass, scales, device=device, amp=amp, max_pixels=max_pixels
    )


def lpcam_f_maps_batch(
    model: CAMClassifier,
    images: Sequence[Tensor],
    class_indices: Sequence[Sequence[int] | None],
    **kwargs: Any,
) -> list[ClassMaps]:
    """LPCAM-F: :func:`lpcam_maps_batch` without the context term."""
    return lpcam_maps_batch(model, images, class_indices, **{**kwargs, "context": False})


def lpcam_maps(
    model: CAMClassifier,
    image: np.ndarray | Tensor,
    class_indices: Sequence[int] | None,
    prototypes: Prototypes | str | os.PathLike,
    context: bool = True,
    scales: Sequence[float] = DEFAULT_SCALES,
    **kwargs: Any,
) -> ClassMaps:
    """LPCAM maps of one image (``H×W×3`` array or ``3×H×W`` tensor, ``uint8`` RGB).

    Other keyword arguments as :func:`lpcam_maps_batch`.
    """
    return lpcam_maps_batch(
        model,
        [image],
        [class_indices],
        prototypes=prototypes,
        context=context,
        scales=scales,
        **kwargs,
    )[0]


MAP_METHODS.register("lpcam")(lpcam_maps_batch)
MAP_METHODS.register("lpcam_f")(lpcam_f_maps_batch)
