"""timm backbones as multi-stage feature extractors with a chosen output stride."""

from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from torch import nn

from wsss.errors import ConfigError, OfflineError


def create_backbone(
    name: str,
    output_stride: int = 16,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    in_chans: int = 3,
) -> nn.Module:
    """Create a timm ``features_only`` backbone returning every stage's features.

    Args:
        name: Any timm model name that supports ``features_only`` (e.g. ``resnet50``,
            ``resnest269e``, ``resnet10t``).
        output_stride: 16 (layer4 stride 1, dilation 2) or 8 (layer3 too); 32 for none.
        pretrained: Load ImageNet weights through timm's hub (needs the network) unless
            ``weights`` is given.
        weights: Local weights file (``.safetensors``, ``.pth`` or ``.bin`` state dict of the
            full timm model); implies ``pretrained``. Loaded without unpickling code.
        in_chans: Input channels.

    Returns:
        A module whose forward returns a list of feature maps, shallow to deep; its
        ``feature_info.channels()`` gives their widths.
    """
    if output_stride not in (8, 16, 32):
        raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if name not in timm.list_models() and not timm.is_model(name):
        raise ConfigError(f"backbone {name!r} is not a timm model name")
    kwargs: dict = dict(features_only=True, output_stride=output_stride, in_chans=in_chans)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"backbone weights file {path} does not exist")
        # timm filters classifier keys and adapts the stem itself when given a local file.
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
        pretrained = True
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        if pretrained and weights is None:
            raise OfflineError(
                f"could not fetch pretrained weights for backbone {name!r} ({type(e).__name__}: "
                f"{e}). On an offline machine, download the timm weights elsewhere and pass "
                f"them as a local file (--set model.weights=PATH), or train from scratch "
                f"(--set model.pretrained=false)."
            ) from e
        raise


def backbone_channels(backbone: nn.Module) -> list[int]:
    """Channel widths of each stage returned by ``backbone``."""
    return list(backbone.feature_info.channels())


@torch.no_grad()
def backbone_reductions(backbone: nn.Module) -> list[int]:
    """Nominal stride of each stage (as timm reports it, ignoring dilation)."""
    return list(backbone.feature_info.reduction())
