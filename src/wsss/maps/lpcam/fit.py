"""Fitting LPCAM prototypes (METHODS.md §5, steps 1–4).

For each class n, the last-stage features of the images that contain n are split by n's CAM
at ``tau`` into a foreground and a context set; each set is clustered with cosine k-means, and
the classifier's 1×1 head ``W`` acts as the evaluator: ``P = softmax_classes(centres · Wᵀ)``.
Foreground centres with ``P[:, n] > mu_f`` become the class prototypes (the best one when none
passes), context centres with ``mu_low < P[:, n] < mu_b`` the context prototypes.

Diagnostics can follow every feature into its cluster: ``tags`` labels each image position
(e.g. the synthetic benchmark's object parts, :func:`wsss.diagnostics.prototypes.part_tags`)
and the record then counts the labels of each cluster's members.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from wsss.data.base import SegmentationDataset
from wsss.data.transforms import normalize, to_tensor
from wsss.errors import ConfigError, DataError
from wsss.io.maps import load_class_maps
from wsss.maps.kmeans import cluster_means, cosine_kmeans
from wsss.maps.lpcam.config import PrototypeConfig
from wsss.maps.lpcam.prototypes import FORMAT, Prototypes, Selection, select_prototypes
from wsss.models.classifier import CAMClassifier

__all__ = ["Tagger", "fit_prototypes"]

log = logging.getLogger(__name__)

Tagger = Callable[[str, int], "np.ndarray | None"]
"""``tags(sample_id, class_index)``: an ``H×W`` array of small integer labels (< 256) of the
image's positions for that class, or None."""


class _Reservoir:
    """Feature rows (with their tags) arriving image by image.

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


def _tags_of(
    tags: Tagger | None,
    sample_id: str,
    class_index: int,
    shape: tuple[int, int],
    size: tuple[int, int],
) -> Tensor | None:
    """The tags of an image's positions for one class, on the feature grid (flattened)."""
    if tags is None:
        return None
    values = tags(sample_id, class_index)
    if values is None:
        return None
    values = np.asarray(values)
    if values.shape != shape or (values.size and (values.min() < 0 or values.max() > 255)):
        raise DataError(
            f"{sample_id}: tags must be an {shape} array of labels in 0..255, got "
            f"{values.dtype} {values.shape}"
        )
    return _to_grid(values, size).flatten().to(torch.uint8)


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


def fit_prototypes(
    model: CAMClassifier,
    dataset: SegmentationDataset,
    cam_dir: str | os.PathLike,
    config: PrototypeConfig | None = None,
    device: torch.device | str | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    tags: Tagger | None = None,
) -> Prototypes:
    """Fit the class and context prototypes of every class of ``dataset``.

    Args:
        model: Trained classifier; its last-stage features are clustered and its head
            ``W`` (``C×D``) scores the centres.
        dataset: Clustering images with image labels.
        cam_dir: Folder of CAM class-map files ``<id>.npz`` for these images; the
            full-resolution map of class n splits the features.
        config: Fitting settings.
        device: Where to run the model and k-means; default: the model's device.
        checkpoint: Path of the classifier checkpoint, recorded in the metadata.
        progress: Show progress bars.
        tags: Optional labels of the image positions (see :data:`Tagger`), carried with
            the features; each cluster's record then holds ``tags``, the count of each
            label among its members. They do not change the prototypes.

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
            for n, repeat in uses[i]:
                cam = _to_grid(_cam_of(cam_dir, sample_id, n, image.shape[:2]), size).flatten()
                codes = _tags_of(tags, sample_id, n, image.shape[:2], size)
                codes = torch.zeros_like(cam, dtype=torch.uint8) if codes is None else codes
                for kind, keep in (("foreground", cam > config.tau), ("context", cam < config.tau)):
                    for _ in range(repeat):
                        sets[(n, kind)].add(flat[keep], codes[keep])
        for n in group:
            for kind, out in (("foreground", foreground), ("context", context)):
                reservoir = sets.pop((n, kind))
                rows, codes = reservoir.collect(dim)
                out[n], per_class[n][kind] = _cluster_set(
                    rows, codes if tags else None, config, device, dataset.classes[n], kind
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
        "tagged": tags is not None,
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
    """k-means on one set; returns the centres (member means) and the set's record.

    With ``codes`` (the tags of the rows), each cluster's record counts its members' tags.
    """
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
    clusters: list[dict[str, Any]] = [{"members": m} for m in members]
    if codes is not None:
        counts = torch.bincount(labels * 256 + codes.long(), minlength=k * 256).view(k, 256)
        for cluster, row in zip(clusters, counts.tolist(), strict=True):
            cluster["tags"] = {str(code): c for code, c in enumerate(row) if c}
    record.update(
        k=k,
        n_iter=result.n_iter,
        converged=result.converged,
        objective=result.objective,
        clusters=clusters,
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
