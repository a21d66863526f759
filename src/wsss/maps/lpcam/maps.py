"""LPCAM and LPCAM-F maps (METHODS.md §5, step 5) and their map methods.

Per TTA scale, ``g = F(x) + hflip(F(hflip x))`` and :func:`lpcam_map` gives
``ReLU(mean_q cos(g, q) − mean_b cos(g, b))`` over class prototypes ``q`` and context
prototypes ``b``; scales are aggregated and max-normalised exactly as CAM maps. The mean of
cosines with unit prototypes is linear in the unit-normalised feature ``ĝ``, so both means fold
into one ``K×D`` matrix (:meth:`Prototypes.head`) and every class of an image costs one
matrix product with ``ĝ``. LPCAM and LPCAM-F differ only in that matrix, so the ``lpcam``
method stacks both heads and writes both outputs from one feature pass.

Deliberate difference: the ReLU applies to every class, also one without context prototypes,
where the LPCAM code leaves ``FG`` unclipped (METHODS.md §5 does not say). With the
non-negative layer-4 features of a ResNet ``FG ≥ 0`` and nothing changes; with signed
features the reference would keep negative map values, which no map file may hold.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsss.errors import ConfigError
from wsss.io.maps import ClassMaps
from wsss.maps.cam import predicted_classes
from wsss.maps.lpcam.prototypes import Prototypes, as_prototypes
from wsss.maps.methods import MapMethod, register_map_method
from wsss.maps.tta import (
    DEFAULT_SCALES,
    as_image_tensor,
    class_maps_by_size,
)
from wsss.models.classifier import CAMClassifier

__all__ = [
    "LPCAMFMethod",
    "LPCAMMethod",
    "check_prototypes",
    "lpcam_f_maps_batch",
    "lpcam_map",
    "lpcam_maps",
    "lpcam_maps_batch",
]


def lpcam_map(features: Tensor, head: Tensor, rectify: Tensor | None = None) -> Tensor:
    """``ReLU(head · ĝ)`` at every position: the LPCAM (or LPCAM-F) maps before normalisation.

    The LPCAM code applies the ReLU only to ``FG − BG``, i.e. to classes with context
    prototypes, and leaves ``FG`` alone for the others (METHODS.md §5 is ambiguous on this).
    ``wsss`` rectifies every row by default, a deliberate fix: a map is a non-negative score,
    and an all-negative one would flip sign under the max normalisation. With the
    reference's post-ReLU ResNet features and prototypes every cosine is non-negative and
    the two agree; they differ for signed features or prototypes (e.g. other backbones).
    ``rectify`` chooses the rows; :func:`lpcam_maps_batch` passes the reference's choice
    (:meth:`Prototypes.has_context`) with ``relu_without_context=False``. Map files cannot
    hold the reference's negative values, so the registered map methods always rectify.

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


def _lpcam_variants(
    model: CAMClassifier,
    images: Sequence[Tensor],
    class_indices: Sequence[Sequence[int] | None],
    prototypes: Prototypes,
    contexts: Sequence[bool],
    *,
    scales: Sequence[float],
    threshold: float,
    device: torch.device | str | None,
    amp: bool,
    max_pixels: int | None,
    relu_without_context: bool = True,
) -> list[list[ClassMaps]]:
    """Per image, the maps of every variant in ``contexts`` (True: LPCAM, False: LPCAM-F).

    The variants differ only in the head applied to the same features, so the heads are
    stacked: channel ``v·C + n`` is variant ``v`` of class ``n``, and one multi-scale feature
    pass serves all of them.
    """
    if len(images) != len(class_indices):
        raise ValueError(f"{len(images)} images but {len(class_indices)} class lists")
    check_prototypes(prototypes, model)
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
    c = prototypes.num_classes
    stacked = [[n + v * c for v in range(len(contexts)) for n in k] for k in classes]

    def features(x: Tensor) -> Tensor:
        return model(x, with_features=True).features

    def make_pass(union: list[int]) -> tuple[Callable, Callable]:
        # ``union`` is sorted, so the channels of variant v follow those of variant v − 1.
        heads = [
            prototypes.head([n - v * c for n in union if v * c <= n < (v + 1) * c], context)
            for v, context in enumerate(contexts)
        ]
        head = torch.cat(heads).to(device)
        rectify = None
        if not relu_without_context:
            rectify = torch.cat(
                [
                    prototypes.has_context(
                        [n - v * c for n in union if v * c <= n < (v + 1) * c], context
                    )
                    for v, context in enumerate(contexts)
                ]
            )

        def merge(a: Tensor, b: Tensor) -> Tensor:
            # Features of the image and of its flip are summed before the cosine.
            return lpcam_map(a + b, head, rectify)

        return features, merge

    maps = class_maps_by_size(
        images,
        stacked,
        make_pass,
        scales,
        device=device,
        amp=amp,
        max_pixels=max_pixels,
    )
    out = []
    for m in maps:
        variant = (m.keys - 1) // c
        out.append(
            [
                ClassMaps(
                    keys=m.keys[variant == v] - v * c,
                    cam=m.cam[variant == v],
                    hr=m.hr[variant == v],
                )
                for v in range(len(contexts))
            ]
        )
    return out


def check_prototypes(
    prototypes: Prototypes, model: CAMClassifier, class_names: Sequence[str] | None = None
) -> None:
    """Refuse prototypes fitted on another classifier or for other classes.

    Raises:
        ConfigError: Class count, feature width or class names differ.
    """
    if prototypes.num_classes != model.num_classes or prototypes.feature_dim != model.feature_dim:
        raise ConfigError(
            f"prototypes are for {prototypes.num_classes} classes × {prototypes.feature_dim} "
            f"features, the classifier has {model.num_classes} × {model.feature_dim}; fit them "
            "with this checkpoint"
        )
    if class_names is not None and list(class_names) != list(prototypes.classes):
        raise ConfigError(
            f"the prototypes are for classes {prototypes.classes}, the dataset has "
            f"{list(class_names)}; fit them on this dataset"
        )


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
    max_pixels: int | None = None,
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
        max_pixels: Input pixels per forward call (None: per device).
        relu_without_context: Also rectify classes without context prototypes (and every
            class of LPCAM-F); False follows the LPCAM code, which rectifies only
            ``FG − BG`` (see :func:`lpcam_map`; its maps can then be negative, and an
            all-negative one comes out sign-flipped from the max normalisation, as there).

    Returns:
        One :class:`ClassMaps` per image: keys = class index + 1, channels max-normalised.
    """
    maps = _lpcam_variants(
        model,
        images,
        class_indices,
        as_prototypes(prototypes),
        (context,),
        scales=scales,
        threshold=threshold,
        device=device,
        amp=amp,
        max_pixels=max_pixels,
        relu_without_context=relu_without_context,
    )
    return [m[0] for m in maps]


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


_CONTEXT = {"lpcam": True, "lpcam_f": False}


@register_map_method("lpcam")
class LPCAMMethod(MapMethod):
    """LPCAM and LPCAM-F maps from one feature pass: outputs ``lpcam`` and ``lpcam_f``.

    Args:
        prototypes: Fitted prototypes or the path of a prototype file (``wsss lpcam fit``).
        threshold: Probability threshold of the predicted classes (unlabelled images).
    """

    outputs = ("lpcam", "lpcam_f")
    files: ClassVar[Mapping[str, str]] = {"prototypes": "the prototype file of `wsss lpcam fit`"}

    def __init__(self, prototypes: Prototypes | str | os.PathLike, threshold: float = 0.5):
        self.prototypes = as_prototypes(prototypes)
        self.threshold = float(threshold)

    def settings(self) -> dict[str, Any]:
        record: dict[str, Any] = {"prototypes": self.prototypes.digest()}
        if self.threshold != 0.5:
            record["threshold"] = self.threshold
        return record

    def restrict(self, outputs: Sequence[str]) -> MapMethod:
        """The same method computing only ``outputs`` (one head fewer)."""
        method = copy.copy(self)
        method.outputs = tuple(o for o in self.outputs if o in outputs)
        return method

    def check(self, model: nn.Module, class_names: Sequence[str] | None) -> None:
        check_prototypes(self.prototypes, model, class_names)

    def compute(self, model, images, class_indices, **tta) -> list[dict[str, ClassMaps]]:
        contexts = [_CONTEXT[o] for o in self.outputs]
        maps = _lpcam_variants(
            model,
            images,
            class_indices,
            self.prototypes,
            contexts,
            threshold=self.threshold,
            **tta,
        )
        return [dict(zip(self.outputs, m, strict=True)) for m in maps]


@register_map_method("lpcam_f")
class LPCAMFMethod(LPCAMMethod):
    """LPCAM-F alone (class prototypes only): output ``lpcam_f``."""

    outputs = ("lpcam_f",)
