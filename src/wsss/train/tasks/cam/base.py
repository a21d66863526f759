"""The ``cam`` task: a multi-label CAM classifier trained on image labels, by strategy.

``train.task=cam`` (the default) builds the strategy named by ``train.strategy`` from
:data:`STRATEGIES` (``vanilla``, ``puzzle``, ``occse``, ``poc``, ``pnoc``; METHODS.md §2).
Each strategy is a :class:`CAMTask` subclass: it builds ``self.model``, the
:class:`~wsss.models.classifier.CAMClassifier` that the run exports, and any helper networks,
and defines its losses. Samples are augmented images with image labels (soft after
MixUp/CutMix); validation reports multi-label classification metrics.
"""

from __future__ import annotations

from typing import Any

import torch

from wsss.config import Config
from wsss.data.base import SegmentationDataset
from wsss.errors import ConfigError
from wsss.models.classifier import CAMClassifier
from wsss.registry import Registry
from wsss.train.losses import multilabel_soft_margin
from wsss.train.tasks.base import TASKS, Task
from wsss.train.validation import ClassificationValidation, ValidationHook

__all__ = ["STRATEGIES", "CAMTask"]

STRATEGIES: Registry[type[CAMTask]] = Registry("training strategy")


@TASKS.register("cam")
class CAMTask(Task):
    """Base class of the CAM training strategies (``train.strategy``).

    Args:
        config: The run's configuration.
        classes: Foreground class names of the training set.
        args: An instance of the strategy's ``Args`` dataclass.

    Raises:
        ConfigError: ``model.num_classes`` contradicts the training set.
    """

    model: CAMClassifier

    def __init__(self, config: Config, classes: list[str], args: Any = None) -> None:
        super().__init__(config, classes, args)
        if config.model.num_classes not in (None, len(self.classes)):
            raise ConfigError(
                f"model.num_classes={config.model.num_classes} but the dataset has "
                f"{len(self.classes)} classes"
            )

    @classmethod
    def resolve(cls, config: Config) -> type[Task]:
        """The strategy class named by ``train.strategy``."""
        if cls is not CAMTask:
            return cls
        try:
            return STRATEGIES.get(config.train.strategy)
        except KeyError as e:
            raise ConfigError(f"train.strategy: {e.args[0]}") from None

    def build_classifier(self) -> CAMClassifier:
        """A :class:`CAMClassifier` as ``config.model`` describes, with C classes."""
        m = self.config.model
        return CAMClassifier(
            backbone=m.backbone,
            num_classes=self.num_classes,
            output_stride=m.output_stride,
            pretrained=m.pretrained,
            weights=m.weights,
        )

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``ℓ(z, LS_ε(y))`` with ε = ``train.label_smoothing``."""
        return multilabel_soft_margin(logits, labels, self.config.train.label_smoothing)

    def validation_hooks(
        self, dataset: SegmentationDataset, progress: bool = True
    ) -> list[ValidationHook]:
        """Multi-label classification metrics (``val/loss``, ``val/map``, ``val/f1``, …)."""
        return [
            ClassificationValidation(
                dataset,
                self.config.data.crop_size,
                self.config.train.batch_size,
                progress=progress,
            )
        ]

    def export_meta(self) -> dict[str, Any]:
        """The strategy's name."""
        return {"strategy": self.config.train.strategy}
