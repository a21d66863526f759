"""Segmentation inference: multi-scale + flip logits, softmax, optional dense CRF (METHODS.md §8).

As the P-NOC / Puzzle-CAM inference script: for every scale ``s`` the image is resized to
``(round(H·s), round(W·s))`` (bicubic on ``uint8``, like PIL), the pair ``[x_s, hflip(x_s)]``
goes through the network in one batch, both logit maps are resized to ``H×W`` (bilinear,
``align_corners=False``), the flipped one is flipped back, and all are summed over flips and
scales. A softmax over classes gives the probabilities; with ``crf`` they are refined by a
dense CRF with the DeepLab-v2 parameters (:func:`wsss.refine.crf.crf_probs`, preset
``deeplab``); the mask is their argmax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.data.transforms import normalize
from wsss.errors import ConfigError
from wsss.maps.tta import (
    DEFAULT_MAX_PIXELS,
    as_image_tensor,
    resize_image,
    scaled_size,
    size_groups,
)
from wsss.refine.crf import CRF_PRESETS, CRFParams, crf_probs

__all__ = [
    "DEEPLAB_V2_CRF",
    "SEGMENTATION_SCALES",
    "CRFParams",
    "SegmentationPrediction",
    "predict_segmentation",
    "segmentation_logits",
]

SEGMENTATION_SCALES = (0.5, 1.0, 1.5, 2.0)
# DeepLab-v2's dense CRF (Gaussian sxy 1 compat 3, bilateral sxy 67 srgb 3 compat 4, 10 its).
DEEPLAB_V2_CRF = CRF_PRESETS["deeplab"]


@dataclass
class SegmentationPrediction:
    """The prediction for one image.

    Attributes:
        probs: ``K×H×W`` ``float32`` class probabilities (after the CRF when it ran).
        mask: ``H×W`` class ids, ``argmax`` of ``probs`` (``uint8``; ``int32`` when K > 255).
    """

    probs: np.ndarray
    mask: np.ndarray


def _model_device(model: Callable) -> torch.device | None:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return None


def segmentation_logits(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor | np.ndarray,
    scales: Sequence[float] = SEGMENTATION_SCALES,
    *,
    flip: bool = True,
    device: torch.device | str | None = None,
    amp: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Logits summed over scales and flips, at the image's resolution.

    Args:
        model: Maps an ImageNet-normalised ``n×3×h×w`` batch to ``n×K×h×w`` logits; an
            ``nn.Module`` must be in eval mode.
        image: ``uint8`` RGB, ``3×H×W`` / ``H×W×3`` array, or ``N×3×H×W`` of equal sizes.
        scales: Resize factors.
        flip: Add the horizontally flipped image's logits (flipped back).
        device: Where the model runs; default the model's device.
        amp: Autocast the model to float16 on CUDA (logits are summed in float32).
        max_pixels: Cap on input pixels per forward pass when batching several images.

    Returns:
        ``K×H×W`` (or ``N×K×H×W``) ``float32`` sums on ``device``.
    """
    if not scales or any(not np.isfinite(s) or s <= 0 for s in scales):
        raise ConfigError(f"TTA scales must be positive numbers, got {list(scales)}")
    if isinstance(model, nn.Module) and model.training:
        raise ValueError("the segmentation model is in training mode; call model.eval() first")
    image = as_image_tensor(image)
    images = image.unsqueeze(0) if image.ndim == 3 else image
    device = torch.device(device or _model_device(model) or images.device)
    n, _, h, w = images.shape
    views = 2 if flip else 1
    total = None
    with torch.inference_mode():
        for scale in scales:
            size = scaled_size((h, w), scale)
            x = normalize(resize_image(images, size).to(device, non_blocking=True))
            chunk = max(1, max_pixels // (views * size[0] * size[1]))
            for i in range(0, n, chunk):
                xs = x[i : i + chunk]
                batch = torch.cat([xs, xs.flip(-1)]) if flip else xs
                with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                    out = model(batch)
                out = F.interpolate(out.float(), (h, w), mode="bilinear", align_corners=False)
                if flip:
                    a, b = out.split(len(xs))
                    out = a + b.flip(-1)
                if total is None:
                    total = out.new_zeros((n, out.shape[1], h, w))
                total[i : i + chunk] += out
    return total[0] if image.ndim == 3 else total


def _dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """The dense CRF of ``K×H×W`` ``probs`` on the ``H×W×3`` ``uint8`` ``image`` (marginals)."""
    return crf_probs(image, probs, params)


def predict_segmentation(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: Sequence[torch.Tensor | np.ndarray],
    scales: Sequence[float] = SEGMENTATION_SCALES,
    *,
    flip: bool = True,
    crf: bool | CRFParams = False,
    device: torch.device | str | None = None,
    amp: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[SegmentationPrediction]:
    """Probabilities and masks of several images; images of equal size share forward passes.

    Args:
        model: The segmentation network (eval mode), ``n×3×h×w`` → ``n×K×h×w`` logits.
        images: ``uint8`` RGB images, ``3×H×W`` tensors or ``H×W×3`` arrays.
        scales: TTA scales (default 0.5, 1, 1.5, 2).
        flip: Horizontal-flip TTA.
        crf: Refine the probabilities with a dense CRF: ``True`` for the DeepLab-v2
            parameters (:data:`DEEPLAB_V2_CRF`) or a :class:`CRFParams`. Needs pydensecrf.
        device: Where the model runs; default the model's device.
        amp: Autocast the model to float16 on CUDA.
        max_pixels: Cap on input pixels per forward pass.

    Returns:
        One :class:`SegmentationPrediction` per image, in order.

    Raises:
        ConfigError: Bad scales, or ``crf`` without pydensecrf installed.
    """
    params = DEEPLAB_V2_CRF if crf is True else (crf or None)
    tensors = [as_image_tensor(im) for im in images]
    results: list[SegmentationPrediction | None] = [None] * len(tensors)
    for group in size_groups([tuple(t.shape[-2:]) for t in tensors]):
        logits = segmentation_logits(
            model,
            torch.stack([tensors[i] for i in group]),
            scales,
            flip=flip,
            device=device,
            amp=amp,
            max_pixels=max_pixels,
        )
        probs = torch.softmax(logits, dim=1).cpu().numpy()
        for j, i in enumerate(group):
            p = probs[j]
            if params is not None:
                p = _dense_crf(tensors[i].permute(1, 2, 0).cpu().numpy(), p, params)
            dtype = np.uint8 if p.shape[0] <= 255 else np.int32
            results[i] = SegmentationPrediction(probs=p, mask=p.argmax(axis=0).astype(dtype))
    return results
