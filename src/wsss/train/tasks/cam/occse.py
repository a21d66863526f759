"""OC-CSE: erase one present class with the generator's own CAM; a frozen classifier must miss it.

Per image a class ``r`` is drawn uniformly among the present ones; the soft mask
``m = up(ReLU(A_r)) / (max + 1e-5)`` erases it, ``x̃ = x ⊙ (1 − m)``, and a frozen ordinary
classifier (OC, a trained vanilla CAM of any backbone) must classify ``x̃`` as ``y`` without
``r``. Gradients flow through the OC (not into it) and the mask into the generator:
``L = ℓ(z, LS y) + λ_cse · ℓ(OC(x̃), LS y_oc)``, ``λ_cse = ramp(0.3, 1, 1)``
(METHODS.md §2; Kweon et al., 2021).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from wsss.config import Config
from wsss.data.loader import Batch
from wsss.errors import ConfigError, DataError
from wsss.models import load_model
from wsss.models.classifier import CAMClassifier
from wsss.train.losses import multilabel_soft_margin
from wsss.train.tasks.base import LossOutput, StepContext
from wsss.train.tasks.cam.base import STRATEGIES, CAMTask
from wsss.train.tasks.cam.functional import (
    check_ramp,
    remove_class,
    sample_present_class,
    soft_erase_mask,
)

__all__ = ["OCCSE", "OCCSEArgs", "class_specific_erasing", "load_ordinary_classifier"]


@dataclass
class OCCSEArgs:
    """Settings of OC-CSE.

    Attributes:
        oc: Checkpoint of the ordinary classifier (a trained vanilla CAM; any backbone, same
            classes): weights file, its ``checkpoints/`` folder or its run directory.
        lambda_cse: ``(start, end, fraction)`` of the ramp of the erasing-loss weight λ_cse.
        mask_norm: ``batch`` normalises the soft mask by one maximum over the batch (the
            reference code), ``image`` by each image's maximum (the paper).
    """

    oc: str | None = None
    lambda_cse: tuple[float, float, float] = (0.3, 1.0, 1.0)
    mask_norm: Literal["batch", "image"] = "batch"


def load_ordinary_classifier(
    path: str | os.PathLike | None, classes: list[str], strategy: str = "occse"
) -> CAMClassifier:
    """Load the OC from a vanilla checkpoint, in eval mode on the CPU.

    Raises:
        ConfigError: No checkpoint given.
        DataError: Unreadable checkpoint, or one trained on other classes.
    """
    if not path:
        raise ConfigError(
            f"the {strategy} strategy needs an ordinary classifier: set "
            f"train.strategy_args.oc=PATH (or --oc PATH) to a trained vanilla checkpoint"
        )
    model, meta = load_model(path, map_location="cpu")
    known = meta.get("classes")
    if known is not None and list(known) != list(classes):
        raise DataError(
            f"{path}: the ordinary classifier was trained on classes {list(known)}, "
            f"the training set has {list(classes)}"
        )
    if getattr(model, "num_classes", len(classes)) != len(classes):
        raise DataError(
            f"{path}: the ordinary classifier has {model.num_classes} classes, "
            f"the training set {len(classes)}"
        )
    return model


def class_specific_erasing(
    classify: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    maps: torch.Tensor,
    mask_norm: Literal["batch", "image"] = "batch",
    smoothing: float = 0.0,
    classes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The erasing term ``ℓ(OC(x ⊙ (1 − m)), LS y_oc)``, differentiable through ``m``.

    Args:
        classify: Maps an image batch to ``B×C`` logits (the OC, or P-NOC's NOC).
        images: ``B×3×H×W`` batch.
        labels: ``B×C`` labels.
        maps: ``B×C×h×w`` raw maps of the generator on ``images``.
        mask_norm: Normalisation of the soft mask (see :func:`soft_erase_mask`).
        smoothing: Label-smoothing ε.
        classes: ``(B,)`` classes to erase; drawn with :func:`sample_present_class` if None.

    Returns:
        The loss (unweighted) and the erased class of each image.
    """
    if classes is None:
        classes = sample_present_class(labels)
    mask = soft_erase_mask(maps, classes, tuple(images.shape[-2:]), mask_norm)
    logits = classify(images * (1 - mask))
    return multilabel_soft_margin(logits, remove_class(labels, classes), smoothing), classes


@STRATEGIES.register("occse")
class OCCSE(CAMTask):
    """OC-CSE with a frozen ordinary classifier (``strategy_args``: :class:`OCCSEArgs`)."""

    Args = OCCSEArgs

    def __init__(self, config: Config, classes: list[str], args: Any = None) -> None:
        super().__init__(config, classes, args)
        check_ramp(self.args.lambda_cse, "lambda_cse")
        self.model = self.build_classifier()
        self.oc = load_ordinary_classifier(self.args.oc, self.classes, "occse").requires_grad_(
            False
        )

    def train(self, mode: bool = True) -> OCCSE:
        """Set the training mode; the ordinary classifier always stays in eval mode."""
        super().train(mode)
        self.oc.eval()
        return self

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        """Classification plus the weighted erasing loss of one micro-batch."""
        out = self.net("model")(batch.images, with_maps=True)
        smoothing = self.config.train.label_smoothing
        cls = self.classification_loss(out.logits, batch.labels)
        cse, _ = class_specific_erasing(
            lambda x: self.oc(x).logits,
            batch.images,
            batch.labels,
            out.maps,
            self.args.mask_norm,
            smoothing,
        )
        lambda_cse = ctx.ramp(*self.args.lambda_cse)
        logs = {"cls": cls.detach(), "cse": cse.detach(), "lambda_cse": lambda_cse}
        return LossOutput(cls + lambda_cse * cse, logs)
