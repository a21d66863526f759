"""Vanilla CAM: ``L = ℓ(z, LS_ε(y))`` (METHODS.md §2)."""

from __future__ import annotations

from typing import Any

from wsss.config import Config
from wsss.data.loader import Batch
from wsss.train.tasks.base import LossOutput, StepContext
from wsss.train.tasks.cam.base import STRATEGIES, CAMTask

__all__ = ["VanillaCAM"]


@STRATEGIES.register("vanilla")
class VanillaCAM(CAMTask):
    """The ordinary CAM classifier: multi-label soft margin on (smoothed) image labels."""

    def __init__(self, config: Config, classes: list[str], args: Any = None) -> None:
        super().__init__(config, classes, args)
        self.model = self.build_classifier()

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        """Classification loss of one micro-batch."""
        logits = self.net("model")(batch.images).logits
        return LossOutput(self.classification_loss(logits, batch.labels))
