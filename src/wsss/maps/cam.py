"""Class activation maps with test-time augmentation (METHODS.md §3).

Per scale ``m_s = ReLU(A(x_s)) + hflip(ReLU(A(hflip x_s)))`` with ``A`` the classifier's raw
maps; the scales are summed onto the stride-4 and full-resolution grids by
:func:`~wsss.maps.tta.multiscale_flip`, only the requested classes are kept and each map is
divided by its maximum (+1e-5). No background channel is stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsss.data.transforms import normalize
from wsss.io.maps import ClassMaps
from wsss.maps.methods import MapMethod, register_map_method
from wsss.maps.tta import (
    DEFAULT_SCALES,
    Forward,
    as_image_tensor,
    class_maps_by_size,
    default_max_pixels,
    size_groups,
)
from wsss.models.classifier import CAMClassifier

__all__ = ["CAMMethod", "cam_forward", "cam_maps", "cam_maps_batch", "predicted_classes"]


def cam_forward(model: CAMClassifier, class_indices: Sequence[int] | None = None) -> Forward:
    """``x ↦ ReLU(A(x))`` restricted to ``class_indices`` (all classes when None)."""
    index = None if class_indices is None else list(class_indices)

    def forward(x: torch.Tensor) -> torch.Tensor:
        maps = model(x, with_maps=True).maps
        return F.relu(maps if index is None else maps[:, index])

    return forward


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def predicted_classes(
    model: CAMClassifier,
    images: Sequence[torch.Tensor],
    threshold: float = 0.5,
    *,
    device: torch.device | str | None = None,
    amp: bool = True,
    max_pixels: int | None = None,
) -> list[list[int]]:
    """Classes with ``sigmoid(logit) ≥ threshold`` on each unaugmented image (scale 1, no flip).

    Args:
        model: The classifier.
        images: ``3×H×W`` ``uint8`` images; equal sizes are batched together.
        threshold: Probability threshold.
        device: Where the model runs; default its current device.
        amp: Autocast on CUDA.
        max_pixels: Input pixels per forward call (None: per device).
    """
    device = torch.device(device) if device is not None else _model_device(model)
    max_pixels = default_max_pixels(device) if max_pixels is None else max_pixels
    images = [as_image_tensor(im) for im in images]
    out: list[list[int]] = [[] for _ in images]
    with torch.inference_mode():
        for group in size_groups([tuple(im.shape[-2:]) for im in images]):
            h, w = images[group[0]].shape[-2:]
            step = max(1, max_pixels // (h * w))
            for k in range(0, len(group), step):
                chunk = group[k : k + step]
                x = normalize(torch.stack([images[i] for i in chunk]).to(device))
                with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                    probs = torch.sigmoid(model(x).logits.float())
                for i, p in zip(chunk, probs.cpu(), strict=True):
                    out[i] = torch.nonzero(p >= threshold).flatten().tolist()
    return out


def _check_classes(indices: Sequence[int], num_classes: int) -> list[int]:
    indices = sorted({int(c) for c in indices})
    if indices and (indices[0] < 0 or indices[-1] >= num_classes):
        raise ValueError(
            f"class indices {indices} out of range for a classifier with {num_classes} classes"
        )
    return indices


def cam_maps_batch(
    model: CAMClassifier,
    images: Sequence[torch.Tensor],
    class_indices: Sequence[Sequence[int] | None],
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    threshold: float = 0.5,
    device: torch.device | str | None = None,
    amp: bool = True,
    max_pixels: int | None = None,
) -> list[ClassMaps]:
    """TTA class maps of several images; images of equal size share forward passes.

    Args:
        model: The classifier, in eval mode.
        images: ``3×H×W`` ``uint8`` RGB images (any sizes).
        class_indices: Per image, the classification-space classes (0..C-1) to keep, or None
            to keep the classes the model predicts (see :func:`predicted_classes`).
        scales: TTA scales.
        threshold: Probability threshold for predicted classes.
        device: Where the model runs; default its current device.
        amp: Autocast on CUDA.
        max_pixels: Input pixels per forward call; None: per device (0.25 Mpx on the CPU,
            3 Mpx on a GPU; see ``multiscale_flip``).

    Returns:
        One :class:`ClassMaps` per image, keys = class index + 1, channels max-normalised.
        An image with no class gets ``0×h4×w4`` and ``0×H×W`` maps.
    """
    if len(images) != len(class_indices):
        raise ValueError(f"{len(images)} images but {len(class_indices)} class lists")
    device = torch.device(device) if device is not None else _model_device(model)
    images = [as_image_tensor(im) for im in images]
    if any(im.ndim != 3 for im in images):
        raise ValueError("cam_maps_batch takes a sequence of single 3×H×W images")
    unknown = [i for i, c in enumerate(class_indices) if c is None]
    classes = [None if c is None else _check_classes(c, model.num_classes) for c in class_indices]
    if unknown:
        found = predicted_classes(
            model,
            [images[i] for i in unknown],
            threshold,
            device=device,
            amp=amp,
            max_pixels=max_pixels,
        )
        for i, c in zip(unknown, found, strict=True):
            classes[i] = c

    return class_maps_by_size(
        images,
        classes,
        lambda union: (cam_forward(model, union), None),
        scales,
        device=device,
        amp=amp,
        max_pixels=max_pixels,
    )


def cam_maps(
    model: CAMClassifier,
    image: np.ndarray | torch.Tensor,
    class_indices: Sequence[int] | None,
    scales: Sequence[float] = DEFAULT_SCALES,
    **kwargs,
) -> ClassMaps:
    """TTA class maps of one image (``H×W×3`` array or ``3×H×W`` tensor, ``uint8`` RGB).

    ``class_indices`` None keeps the predicted classes. Other keyword arguments as
    :func:`cam_maps_batch`.
    """
    return cam_maps_batch(model, [image], [class_indices], scales=scales, **kwargs)[0]


@register_map_method("cam")
class CAMMethod(MapMethod):
    """CAM maps of a CAM classifier (:func:`cam_maps_batch`), registered as ``cam``.

    Args:
        threshold: Probability threshold of the predicted classes (unlabelled images).
    """

    outputs = ("cam",)

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = float(threshold)

    def settings(self) -> dict[str, float]:
        return {} if self.threshold == 0.5 else {"threshold": self.threshold}

    def compute(self, model, images, class_indices, **tta) -> list[dict[str, ClassMaps]]:
        maps = cam_maps_batch(model, images, class_indices, threshold=self.threshold, **tta)
        return [{"cam": m} for m in maps]
