"""P-OC: the Puzzle-CAM and OC-CSE terms summed on one generator (P-NOC paper §3.1).

``L = ℓ(z, LS y) + ℓ(GAP(A_re), LS y) + λ_re · mean(y · |A − A_re|) + λ_cse · ℓ(OC(x̃), LS y_oc)``
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from wsss.config import Config
from wsss.data.loader import Batch
from wsss.train.tasks.base import LossOutput, StepContext
from wsss.train.tasks.cam.base import STRATEGIES, CAMTask
from wsss.train.tasks.cam.functional import check_ramp
from wsss.train.tasks.cam.occse import (
    OCCSEArgs,
    class_specific_erasing,
    load_ordinary_classifier,
)
from wsss.train.tasks.cam.puzzle import PuzzleArgs, check_tileable, puzzle_terms

__all__ = ["POC", "POCArgs"]


@dataclass
class POCArgs(OCCSEArgs, PuzzleArgs):
    """Settings of P-OC: those of :class:`PuzzleArgs` and :class:`OCCSEArgs`."""


@STRATEGIES.register("poc")
class POC(CAMTask):
    """Puzzle-CAM plus class-specific erasing against a frozen ordinary classifier."""

    Args = POCArgs

    def __init__(self, config: Config, classes: list[str], args: Any = None) -> None:
        super().__init__(config, classes, args)
        check_tileable(config, self.config.train.strategy)
        check_ramp(self.args.lambda_re, "lambda_re")
        check_ramp(self.args.lambda_cse, "lambda_cse")
        self.model = self.build_classifier()
        self.build_critic()

    def build_critic(self) -> None:
        """Build the classifier that judges the erased images (here: the frozen OC)."""
        self.oc = load_ordinary_classifier(self.args.oc, self.classes, "poc").requires_grad_(False)

    def critic(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The function from erased images to the critic's logits, as the generator sees it."""
        return lambda x: self.oc(x).logits

    def freeze_critic(self) -> None:
        """Put what must not train of the critic in eval mode (here: the whole OC)."""
        self.oc.eval()

    def train(self, mode: bool = True) -> POC:
        """Set the training mode, then :meth:`freeze_critic`."""
        super().train(mode)
        self.freeze_critic()
        return self

    def generator_loss(
        self, batch: Batch, ctx: StepContext
    ) -> tuple[LossOutput, torch.Tensor, torch.Tensor]:
        """The P-OC loss of one micro-batch.

        Returns:
            The loss, the generator's detached raw maps and the erased class of each image.
        """
        net = self.net("model")
        smoothing = self.config.train.label_smoothing
        out = net(batch.images, with_maps=True)
        cls = self.classification_loss(out.logits, batch.labels)
        re_cls, re = puzzle_terms(net, batch.images, out.maps, batch.labels, smoothing)
        cse, classes = class_specific_erasing(
            self.critic(), batch.images, batch.labels, out.maps, self.args.mask_norm, smoothing
        )
        lambda_re = ctx.ramp(*self.args.lambda_re)
        lambda_cse = ctx.ramp(*self.args.lambda_cse)
        loss = cls + re_cls + lambda_re * re + lambda_cse * cse
        logs = {
            "cls": cls.detach(),
            "re_cls": re_cls.detach(),
            "re": re.detach(),
            "cse": cse.detach(),
            "lambda_re": lambda_re,
            "lambda_cse": lambda_cse,
        }
        return LossOutput(loss, logs), out.maps.detach(), classes

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        """The P-OC loss of one micro-batch."""
        return self.generator_loss(batch, ctx)[0]
