"""Class-agnostic saliency maps with test-time augmentation (METHODS.md §6).

Two kinds of saliency model:

- C²AM / C²AM-H (:class:`~wsss.models.ccam.CCAM`): per scale ``s`` of ``scales`` the batch
  ``[x_s, hflip(x_s)]`` gives ``ReLU(direction · ℓ)`` (the stored direction orients the
  logits), the two summed with the flip undone; the scales are summed after bilinear resizing
  (stride 4 and full resolution exactly as the CAMs of METHODS.md §3), then the map is divided
  by its maximum + 1e-5 (the C²AM appendix: "adding the activation maps of those eight images
  and normalizing them to [0, 1]").
- A two-class saliency detector (``saliency_detector`` task, a ``deeplabv3plus`` with two
  classes): the softmax probability of the salient class, averaged over the ``2·len(scales)``
  passes, so it stays a probability (not max-normalised).

Either way an image gets one channel, key :data:`AGNOSTIC_KEY` (0, the background id, which no
class uses): the :class:`~wsss.io.maps.ClassMaps` format with one channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from wsss.errors import ConfigError
from wsss.io.maps import ClassMaps
from wsss.maps.methods import AGNOSTIC_KEY, MapMethod, register_map_method
from wsss.maps.tta import as_image_tensor, multiscale_flip, normalize_maps, size_groups

__all__ = [
    "AGNOSTIC_KEY",
    "CCAMMethod",
    "SaliencyDetectorMethod",
    "is_saliency_model",
    "saliency_forward",
    "saliency_maps_batch",
]


def is_saliency_model(model: nn.Module) -> bool:
    """Whether ``model`` gives saliency: a C²AM, or a two-class segmentation network."""
    return hasattr(model, "saliency_logits") or getattr(model, "num_classes", None) == 2


def saliency_forward(model: nn.Module):
    """``x ↦ B×1×h×w`` per-pass saliency of ``model`` (see the module docstring)."""
    if hasattr(model, "saliency_logits"):
        return lambda x: model.saliency_logits(x).float().relu()
    return lambda x: torch.softmax(model(x).float(), dim=1)[:, 1:2]


def saliency_maps_batch(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    *,
    scales: Sequence[float] = (1.0, 0.5, 1.5, 2.0),
    device: torch.device | str | None = None,
    amp: bool = True,
    **tta: Any,
) -> list[ClassMaps]:
    """One-channel TTA saliency maps of several images (equal sizes share forward passes).

    Args:
        model: A C²AM (oriented by its stored direction) or a two-class detector, eval mode.
        images: ``3×H×W`` ``uint8`` RGB images (or ``H×W×3`` arrays).
        scales: TTA scales, each with its flip.
        device: Where the model runs (default: its parameters' device).
        amp: Autocast on CUDA.
        **tta: Further options of :func:`~wsss.maps.tta.multiscale_flip` (``max_pixels``).

    Returns:
        Per image, :class:`ClassMaps` with ``keys = [0]``, ``cam`` (stride 4) and ``hr``
        (full resolution), values in [0, 1].

    Raises:
        ValueError: ``model`` is neither kind.
    """
    if not is_saliency_model(model):
        raise ValueError(
            f"{type(model).__name__} gives no saliency: expected a C²AM (ccam) or a two-class "
            "saliency detector"
        )
    if device is None:
        device = next(model.parameters()).device
    detector = not hasattr(model, "saliency_logits")
    forward = saliency_forward(model)
    images = [as_image_tensor(im) for im in images]
    out: list[ClassMaps | None] = [None] * len(images)
    for group in size_groups([tuple(im.shape[-2:]) for im in images]):
        strided, hr = multiscale_flip(
            forward,
            torch.stack([images[i] for i in group]),
            scales,
            device=device,
            amp=amp,
            **tta,
        )
        if detector:
            passes = 2 * len(scales)
            strided, hr = (strided / passes).clamp(0, 1), (hr / passes).clamp(0, 1)
        else:
            strided, hr = normalize_maps(strided), normalize_maps(hr)
        for j, i in enumerate(group):
            out[i] = ClassMaps([AGNOSTIC_KEY], strided[j].cpu().numpy(), hr[j].cpu().numpy())
    return out


@register_map_method("ccam")
class CCAMMethod(MapMethod):
    """C²AM / C²AM-H saliency (:func:`saliency_maps_batch`), registered as ``ccam``.

    Class-agnostic: one channel per image, key :data:`AGNOSTIC_KEY`; labels are not read.
    """

    outputs = ("ccam",)
    model_types = ("ccam",)
    class_agnostic = True

    def compute(self, model, images, class_indices, **tta) -> list[dict[str, ClassMaps]]:
        return [{self.outputs[0]: m} for m in saliency_maps_batch(model, images, **tta)]


@register_map_method("saliency_detector")
class SaliencyDetectorMethod(CCAMMethod):
    """Maps of a two-class saliency detector (``saliency_detector`` task): the mean
    probability of the salient class over the TTA passes."""

    outputs = ("saliency_detector",)
    model_types = ("deeplabv3plus",)

    def check(self, model: nn.Module, class_names: Sequence[str] | None) -> None:
        if getattr(model, "num_classes", None) != 2:
            raise ConfigError(
                f"map method 'saliency_detector' needs a two-class saliency detector; this "
                f"deeplabv3plus has {getattr(model, 'num_classes', '?')} classes (a "
                f"segmentation model?)"
            )
