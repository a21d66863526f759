"""LPCAM prototypes: the fitted set, the classifier as evaluator, selection, files.

A :class:`Prototypes` holds, per class, the class prototypes (foreground centres kept by
:func:`select_prototypes`) and the context prototypes; :meth:`Prototypes.head` folds them into
the ``K×D`` matrix that gives LPCAM (METHODS.md §5) as one product with unit features.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from wsss.errors import ConfigError, DataError
from wsss.io.atomic import atomic_path

__all__ = [
    "FORMAT",
    "Prototypes",
    "Selection",
    "as_prototypes",
    "class_scores",
    "load_prototypes",
    "save_prototypes",
    "select_prototypes",
]

FORMAT = "wsss.lpcam.prototypes"


@dataclass
class Prototypes:
    """Class and context prototypes of every class, with the metadata of their fitting.

    Attributes:
        foreground: Per class, ``K'_n×D`` class prototypes (raw feature-space centres).
        context: Per class, ``K''_n×D`` context prototypes (possibly none).
        classes: Foreground class names.
        meta: JSON-serialisable fitting record (settings, counts, scores, tags).
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

    def digest(self) -> str:
        """SHA-256 of the class names and prototype values (identifies what maps they give)."""
        h = hashlib.sha256(json.dumps(self.classes).encode())
        for t in (*self.foreground, *self.context):
            t = t.detach().float().contiguous().cpu()
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    @property
    def num_classes(self) -> int:
        """Number of foreground classes C."""
        return len(self.classes)

    @property
    def feature_dim(self) -> int:
        """Feature width D."""
        return self.foreground[0].shape[1]

    def has_context(self, class_indices: Sequence[int], context: bool = True) -> Tensor:
        """Which rows of :meth:`head` subtract a context term (``bool``, one per class)."""
        return torch.tensor(
            [
                context and len(self.foreground[n]) > 0 and len(self.context[n]) > 0
                for n in class_indices
            ],
            dtype=torch.bool,
        )

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


def save_prototypes(path: str | os.PathLike, prototypes: Prototypes) -> None:
    """Write prototypes as safetensors (``class_{n}_fg``, ``class_{n}_ctx``) atomically.

    The metadata JSON (fitting settings, classifier checkpoint, counts, scores, tag
    counts) is stored in the file's header under ``wsss``.
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


def as_prototypes(prototypes: Prototypes | str | os.PathLike) -> Prototypes:
    """``prototypes`` itself, or the prototypes read from that file."""
    return prototypes if isinstance(prototypes, Prototypes) else load_prototypes(prototypes)
