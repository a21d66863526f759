"""C²AM: a class-agnostic activation map learnt by contrasting foreground and background.

The network splits every image into two partitions with a one-channel head ``ℓ`` on the deep
features ``z``; ``p = σ(ℓ)`` weighs the foreground vector ``f = mean_u p·z`` and
``1 − p`` the background vector ``b``. The contrastive loss (``wsss.train.ccam_losses``) makes
the ``f`` of different images alike, the ``b`` alike, and ``f`` unlike ``b``. Nothing in it
says which partition holds the objects: the learnt partition can come out inverted. The
stored ``direction`` (+1 or −1, a buffer saved with the weights) orients it; saliency logits
are ``direction · ℓ``. (The original code inverts with ``1 − ℓ``, which is wrong for logits:
it shifts instead of flipping the sign.) :func:`detect_direction` decides the direction from
many images with the border prior.

Reference: Xie et al., "C²AM: Contrastive learning of Class-agnostic Activation Map for
Weakly Supervised Object Localization and Semantic Segmentation", CVPR 2022; METHODS.md §6.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.backbone import backbone_channels, create_backbone
from wsss.models.classifier import split_parameters
from wsss.models.registry import MODELS

__all__ = ["CCAM", "CCAMOutput", "DirectionEstimate", "detect_direction"]


@dataclass
class CCAMOutput:
    """What :class:`CCAM` returns.

    Attributes:
        fg: ``B×D`` foreground vectors ``mean_u p(u)·z(u)``.
        bg: ``B×D`` background vectors ``mean_u (1 − p(u))·z(u)``.
        logits: ``B×1×h×w`` raw head output ``ℓ`` (not oriented by ``direction``).
    """

    fg: torch.Tensor
    bg: torch.Tensor
    logits: torch.Tensor


@MODELS.register("ccam")
class CCAM(nn.Module):
    """Backbone + disentangler head ``ℓ = BN(conv3×3(z → 1, no bias))``.

    ``z = concat(layer4, layer3)`` (the last two backbone stages; 2048 + 1024 channels for a
    ResNet-50). At output stride 16 both stages share a grid; at 32 the third stage is
    resized (bilinear) to the fourth's.

    Args:
        backbone: timm model name.
        output_stride: 16 (default), 8 or 32.
        pretrained: ImageNet weights via timm (needs the network).
        weights: Local backbone weights file; implies pretrained.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        output_stride: int = 16,
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.backbone_name = backbone
        self.output_stride = output_stride
        self.backbone = create_backbone(backbone, output_stride, pretrained, weights)
        channels = backbone_channels(self.backbone)
        self.feature_dim = channels[-1] + channels[-2]
        self.head = nn.Conv2d(self.feature_dim, 1, kernel_size=3, padding=1, bias=False)
        nn.init.kaiming_normal_(self.head.weight)  # as P-NOC; BN follows, so scale is moot
        self.head_bn = nn.BatchNorm2d(1)
        # +1: ℓ is the saliency logit; −1: the partition came out inverted.
        self.register_buffer("direction", torch.ones(()))
        self.pretrained = pretrained or weights is not None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``z = concat(layer4, layer3)``, ``B×D×h×w``."""
        stages = self.backbone(x)
        deep, mid = stages[-1], stages[-2]
        if mid.shape[-2:] != deep.shape[-2:]:
            mid = F.interpolate(mid, size=deep.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([deep, mid], dim=1)

    def forward(self, x: torch.Tensor) -> CCAMOutput:
        """Foreground/background vectors and raw logits of ``x`` (``B×3×H×W``, normalised)."""
        z = self.features(x)
        logits = self.head_bn(self.head(z))
        p = torch.sigmoid(logits).flatten(2)  # B×1×hw
        weights = torch.cat([p, 1.0 - p], dim=1) / p.shape[-1]  # B×2×hw
        pooled = torch.bmm(weights.to(z.dtype), z.flatten(2).transpose(1, 2))  # B×2×D
        return CCAMOutput(fg=pooled[:, 0], bg=pooled[:, 1], logits=logits)

    def saliency_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Oriented saliency logits ``direction · ℓ``, ``B×1×h×w`` (inference)."""
        z = self.features(x)
        return self.head_bn(self.head(z)) * self.direction.to(z.dtype)

    def set_direction(self, direction: int) -> None:
        """Store the orientation (+1 or −1) that :meth:`saliency_logits` applies."""
        if direction not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, got {direction!r}")
        self.direction.fill_(float(direction))

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters not covered by pretrained weights (the head and its BN)."""
        return [*self.head.parameters(), *self.head_bn.parameters()]

    def param_groups(
        self, norm_weight_group: Literal["weights", "biases"] = "weights"
    ) -> dict[str, list[nn.Parameter]]:
        """The four groups of METHODS.md §1, as in :class:`~wsss.models.CAMClassifier`.

        The backbone is ``pretrained_*``, the head (convolution and BN) ``new_*``, split by
        :func:`~wsss.models.classifier.split_parameters`: norm scales γ go with the weights by
        default (the reference code groups by name, so the head BN's scale is a new weight),
        with the biases for ``norm_weight_group="biases"``. Frozen parameters are left out.
        """
        groups: dict[str, list[nn.Parameter]] = {}
        for prefix, modules in (
            ("pretrained", [self.backbone]),
            ("new", [self.head, self.head_bn]),
        ):
            weights: list[nn.Parameter] = []
            biases: list[nn.Parameter] = []
            for module in modules:
                w, b = split_parameters(module, norm_weight_group)
                weights += w
                biases += b
            groups[f"{prefix}_weights"], groups[f"{prefix}_biases"] = weights, biases
        return groups

    def architecture(self) -> dict:
        """JSON-serialisable description used to rebuild the model from a checkpoint.

        ``direction`` is a buffer, so it travels with the weights, not here.
        """
        return {
            "type": "ccam",
            "backbone": self.backbone_name,
            "output_stride": self.output_stride,
        }


@dataclass(frozen=True)
class DirectionEstimate:
    """The orientation decided by :func:`detect_direction`.

    Attributes:
        direction: +1 when ``p = σ(ℓ)`` marks the objects, −1 when the partition is inverted.
        border: Mean foreground probability on the image borders (mean over images).
        interior: Mean foreground probability inside the borders (mean over images).
        images: Number of maps that contributed.
    """

    direction: int
    border: float
    interior: float
    images: int


def _as_maps(maps: torch.Tensor | np.ndarray) -> np.ndarray:
    """``n×h×w`` float64 array from ``h×w``, ``n×h×w`` or ``n×1×h×w``."""
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().float().cpu().numpy()
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"maps must be h×w, n×h×w or n×1×h×w, got shape {tuple(arr.shape)}")
    return arr


def detect_direction(
    maps: Iterable[torch.Tensor | np.ndarray] | torch.Tensor | np.ndarray,
    border: int = 4,
    rule: str = "interior",
) -> DirectionEstimate:
    """Decide whether the learnt partition is inverted, from the border prior.

    Objects rarely fill the image borders, so the foreground probability ``p = σ(ℓ)`` should
    be low there. Each map's border value is the mean of its four strips (the first and last
    ``border`` rows and columns); the interior value is the mean of the rest. Both are
    averaged over the maps (each map weighs the same, whatever its size).

    Args:
        maps: Foreground probabilities ``σ(ℓ)`` (not logits), one array/tensor or an iterable
            of them, each ``h×w``, ``n×h×w`` or ``n×1×h×w``; sizes may differ between items.
        border: Strip width in cells of the maps' grid. The reference uses 4 on the stride-16
            logit grid (4 of 28 cells at 448 px).
        rule: ``"interior"`` (default): inverted when the border mean exceeds the interior
            mean, which does not depend on where the probabilities are centred.
            ``"reference"``: inverted when the border mean exceeds 0.5 (the original code's
            ``check_positive``, which looks at the last batch of the first epoch only).

    Returns:
        The :class:`DirectionEstimate`.

    Raises:
        ValueError: No maps, a bad ``border`` or ``rule``, or maps too small to have an
            interior with the ``"interior"`` rule.
    """
    if rule not in ("interior", "reference"):
        raise ValueError(f"rule must be 'interior' or 'reference', got {rule!r}")
    if border < 1:
        raise ValueError(f"border must be at least 1 cell, got {border}")
    if isinstance(maps, torch.Tensor | np.ndarray):
        maps = [maps]
    border_sum = interior_sum = 0.0
    images = interior_images = 0
    for item in maps:
        arr = _as_maps(item)
        n, h, w = arr.shape
        b = min(border, h, w)
        strips = (
            arr[:, :b, :].mean((1, 2))
            + arr[:, -b:, :].mean((1, 2))
            + arr[:, :, :b].mean((1, 2))
            + arr[:, :, -b:].mean((1, 2))
        ) / 4
        border_sum += float(strips.sum())
        images += n
        if h > 2 * border and w > 2 * border:
            interior_sum += float(arr[:, border:-border, border:-border].mean((1, 2)).sum())
            interior_images += n
    if images == 0:
        raise ValueError("detect_direction needs at least one map")
    border_mean = border_sum / images
    interior_mean = interior_sum / interior_images if interior_images else math.nan
    if rule == "reference":
        inverted = border_mean > 0.5
    else:
        if not interior_images:
            raise ValueError(
                f"maps are too small for a {border}-cell border and an interior; "
                "use a smaller border or rule='reference'"
            )
        inverted = border_mean > interior_mean
    return DirectionEstimate(-1 if inverted else 1, border_mean, interior_mean, images)
