"""Puzzle-CAM: the maps of an image's four quarters must reassemble into the image's maps.

``L = ℓ(z, LS y) + ℓ(GAP(A_re), LS y) + λ_re · mean_{b,c,h,w}(y_bc · |A − A_re|)`` with
``A_re = merge(f(tile(x)))`` from a second forward pass of the same network (BN in train mode)
and ``λ_re = ramp(0, 4, 0.5)`` (METHODS.md §2; Jo and Yu, 2021).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from wsss.config import Config
from wsss.data.loader import Batch
from wsss.errors import ConfigError
from wsss.train.losses import multilabel_soft_margin
from wsss.train.tasks.base import LossOutput, StepContext
from wsss.train.tasks.cam.base import STRATEGIES, CAMTask
from wsss.train.tasks.cam.functional import check_ramp, merge, reconstruction_loss, tile

__all__ = ["PuzzleArgs", "PuzzleCAM", "check_tileable", "puzzle_terms"]


@dataclass
class PuzzleArgs:
    """Settings of Puzzle-CAM.

    Attributes:
        lambda_re: ``(start, end, fraction)`` of the ramp of the reconstruction weight λ_re:
            ``start → end`` over the first ``fraction`` of training.
    """

    lambda_re: tuple[float, float, float] = (0.0, 4.0, 0.5)


def check_tileable(config: Config, strategy: str) -> None:
    """Raise a :class:`ConfigError` when training crops cannot be cut into 2×2 tiles."""
    if config.data.crop_size % 2:
        raise ConfigError(
            f"the {strategy} strategy tiles each crop into 2×2 quarters: data.crop_size must be "
            f"even (best a multiple of 2 × model.output_stride), got {config.data.crop_size}"
        )


def puzzle_terms(
    net: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    labels: torch.Tensor,
    smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two Puzzle-CAM terms that need the tiles' forward pass.

    Args:
        net: The CAM classifier being trained (called on the tiles).
        images: ``B×3×H×W`` batch.
        maps: ``B×C×h×w`` raw maps of ``images`` from the same network.
        labels: ``B×C`` unsmoothed labels.
        smoothing: Label-smoothing ε of the classification term.

    Returns:
        ``ℓ(GAP(A_re), LS y)`` and the reconstruction loss ``mean(y · |A − A_re|)``.

    Raises:
        ConfigError: The merged tile maps do not have the size of the image's maps (the crop
            is not a multiple of twice the backbone's output stride).
    """
    merged = merge(net(tile(images), with_maps=True).maps)
    if merged.shape != maps.shape:
        raise ConfigError(
            f"Puzzle-CAM: the maps of the {images.shape[-2] // 2}×{images.shape[-1] // 2} tiles "
            f"merge to {tuple(merged.shape[-2:])} but the image's maps are "
            f"{tuple(maps.shape[-2:])}; choose data.crop_size divisible by 2 × the output stride"
        )
    re_cls = multilabel_soft_margin(merged.mean(dim=(2, 3)), labels, smoothing)
    return re_cls, reconstruction_loss(maps, merged, labels)


@STRATEGIES.register("puzzle")
class PuzzleCAM(CAMTask):
    """Puzzle-CAM on one classifier (``strategy_args``: :class:`PuzzleArgs`)."""

    Args = PuzzleArgs

    def __init__(self, config: Config, classes: list[str], args: Any = None) -> None:
        super().__init__(config, classes, args)
        check_tileable(config, "puzzle")
        check_ramp(self.args.lambda_re, "lambda_re")
        self.model = self.build_classifier()

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        """Classification, tile classification and weighted reconstruction of one micro-batch."""
        net = self.net("model")
        out = net(batch.images, with_maps=True)
        cls = self.classification_loss(out.logits, batch.labels)
        re_cls, re = puzzle_terms(
            net, batch.images, out.maps, batch.labels, self.config.train.label_smoothing
        )
        lambda_re = ctx.ramp(*self.args.lambda_re)
        logs = {"cls": cls.detach(), "re_cls": re_cls.detach(), "re": re.detach()}
        return LossOutput(cls + re_cls + lambda_re * re, {**logs, "lambda_re": lambda_re})
