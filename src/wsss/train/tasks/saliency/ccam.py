"""The ``ccam`` task: C²AM, and C²AM-H when given hints (METHODS.md §6; P-NOC §4).

``train.task=ccam`` trains a :class:`~wsss.models.ccam.CCAM` (backbone from ``model``) on the
training images alone: the rank-weighted contrastive loss of
:func:`~wsss.train.ccam_losses.ccam_loss` (in ``float32`` even under AMP) over the forward
batch. With ``train.strategy_args.hints=DIR`` (any class-map folder: CAM, LPCAM, a P-NOC run)
it is C²AM-H: each image's hint map ``max_c CAM_c`` follows its crop and flip, and
``λ_h · hint_loss`` anchors the partition (:func:`~wsss.train.ccam_losses.hint_loss`).
Image labels are not used; batch mixing (MixUp, CutMix) is refused.

Direction. The contrastive loss does not say which partition holds the objects. At the end
of every epoch (so every exported checkpoint, and the validation after it, is oriented) the
task computes ``σ(ℓ)`` on ``direction_images`` training images, each resized to the crop
size as a square (the reference's fixed-size resize, so borders are the image's borders),
decides the direction with the border prior (:func:`~wsss.models.ccam.detect_direction`) and
stores it in the model's ``direction`` buffer, which travels with the weights; the estimate
is also written into the checkpoint's metadata (``direction``). With hints the hint loss
anchors the partition (foreground = high ``ℓ``), so ``direction="auto"`` stores +1 and records
the border-prior estimate as a check.

Batches, accumulation and DDP: ranks are taken over the forward batch (see
:mod:`wsss.train.ccam_losses`); ``gather=true`` contrasts each process's images with the
global batch under DDP. Gradient accumulation cannot reproduce a larger batch.

Recipes: ``voc12-ccam`` (the C²AM appendix: SGD lr 1e-4, momentum 0.9, weight decay 1e-4,
cosine, batch 128, crops 448 of 512) and ``synth-ccam`` (the CPU demo).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from wsss.config import Config
from wsss.data.base import SegmentationDataset
from wsss.data.transforms import normalize, to_tensor
from wsss.errors import ConfigError
from wsss.models.ccam import CCAM, DirectionEstimate, detect_direction
from wsss.train.ccam_losses import ALPHA_WSSS, ccam_loss, hint_loss
from wsss.train.tasks.base import TASKS, LossOutput, StepContext, Task
from wsss.train.tasks.saliency.data import (
    HintBatch,
    HintCollate,
    HintDataset,
    HintTransform,
    check_hint_folder,
)
from wsss.train.tasks.saliency.validation import SaliencyValidation, ccam_scores, has_masks
from wsss.train.validation import ValidationHook

__all__ = ["CCAMArgs", "CCAMTask"]


@dataclass
class CCAMArgs:
    """Settings of the ``ccam`` task (``train.strategy_args``).

    Attributes:
        alpha: Rank-weight decay α: 0.25 for WSSS (default), 0.05 for WSOL.
        gather: Under DDP, contrast with the images of every process (the reference's
            ``DataParallel`` behaviour); no effect on one process.
        hints: Folder of class maps of the training split (C²AM-H), or None (C²AM).
        hint_weight: λ_h (default 1).
        hint_fg: δ_fg: hint pixels have ``A ≥ hint_fg`` (default 0.4).
        hint_bg: δ_bg: with a value, pixels with ``A < hint_bg`` are background hints
            (described in the paper, 0.1; unused in its code, hence None by default).
        hint_smoothing: Label smoothing ε of the hint targets (0.1: target 0.95).
        hint_mode: Resize of the hint map to the logit grid: ``bicubic`` (default, class
            maps), ``bilinear`` or ``nearest`` (mask files).
        direction: ``auto`` (default): +1 with hints, else the border prior; ``detect``:
            always the border prior; ``positive``: always +1 (no detection).
        direction_images: Training images the border prior looks at (the first of a seeded
            permutation; all when fewer).
        direction_border: Border width in logit cells; None: a seventh of the grid's shorter
            side, at least 1 (4 of 28 cells at 448 px and stride 16, as the reference).
        direction_rule: ``interior`` (border mean against interior mean, default) or
            ``reference`` (border mean against 0.5, the original code's test).
    """

    alpha: float = ALPHA_WSSS
    gather: bool = False
    hints: str | None = None
    hint_weight: float = 1.0
    hint_fg: float = 0.4
    hint_bg: float | None = None
    hint_smoothing: float = 0.1
    hint_mode: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    direction: Literal["auto", "detect", "positive"] = "auto"
    direction_images: int = 512
    direction_border: int | None = None
    direction_rule: Literal["interior", "reference"] = "interior"


@TASKS.register("ccam")
class CCAMTask(Task):
    """C²AM / C²AM-H training; see the module docstring.

    Raises:
        ConfigError: Invalid settings (α ≤ 0, thresholds outside [0, 1], no images for the
            direction, batch mixing, a batch of one image).
    """

    Args = CCAMArgs
    model: CCAM

    def __init__(self, config: Config, classes: list[str], args: CCAMArgs | None = None) -> None:
        super().__init__(config, classes, args)
        a: CCAMArgs = self.args
        if a.alpha <= 0:
            raise ConfigError(f"train.strategy_args.alpha must be positive, got {a.alpha}")
        if not 0 <= a.hint_fg <= 1 or (a.hint_bg is not None and not 0 <= a.hint_bg <= a.hint_fg):
            raise ConfigError(
                f"train.strategy_args: need 0 <= hint_bg <= hint_fg <= 1, got hint_fg="
                f"{a.hint_fg}, hint_bg={a.hint_bg}"
            )
        if not 0 <= a.hint_smoothing < 1 or a.hint_weight < 0:
            raise ConfigError("train.strategy_args: hint_smoothing in [0, 1), hint_weight >= 0")
        if a.direction_images < 1 and a.direction != "positive":
            raise ConfigError(
                f"train.strategy_args.direction_images must be at least 1, got "
                f"{a.direction_images} (or set direction=positive to skip detection)"
            )
        if a.direction_border is not None and a.direction_border < 1:
            raise ConfigError("train.strategy_args.direction_border must be at least 1 cell")
        if config.train.batch_size < 2:
            raise ConfigError("train.batch_size must be at least 2: C²AM contrasts images")
        m = config.model
        self.model = CCAM(
            backbone=m.backbone,
            output_stride=m.output_stride,
            pretrained=m.pretrained,
            weights=m.weights,
        )
        self._dataset: SegmentationDataset | None = None
        self.estimate: DirectionEstimate | None = None
        self.direction_source = "not detected"

    # ------------------------------------------------------------------------- data

    def train_transform(self) -> HintTransform:
        """The task's augmentation, carrying hint maps along (:class:`HintTransform`)."""
        dc, aug = self.config.data, self.config.train.augment
        return HintTransform(
            dc.crop_size,
            dc.resize_long,
            hflip=aug.hflip,
            randaugment=aug.randaugment,
            color_jitter=aug.color_jitter,
        )

    def train_data(self, dataset: SegmentationDataset) -> Dataset:
        """Augmented images with their hint maps (when ``hints`` is set)."""
        self._dataset = dataset
        hints = self.args.hints
        if hints is not None:
            check_hint_folder(hints, dataset)
        return HintDataset(dataset, self.train_transform(), hints)

    def collate(self) -> HintCollate:
        """Stacks samples; refuses batch mixing, which would blend foregrounds and backgrounds.

        Raises:
            ConfigError: MixUp or CutMix is enabled.
        """
        if self.batch_mix().enabled:
            raise ConfigError(
                "train.augment.mixup_alpha/cutmix_alpha: the ccam task does not mix images "
                "(a mixed image has no single foreground); set both to 0"
            )
        return HintCollate()

    # ------------------------------------------------------------------------- losses

    def loss(self, phase: str, batch: HintBatch, ctx: StepContext) -> LossOutput:
        """Contrastive loss (+ λ_h · hint loss with hints), in ``float32``."""
        a: CCAMArgs = self.args
        out = self.net("model")(batch.images)
        terms = ccam_loss(out.fg, out.bg, alpha=a.alpha, gather=a.gather)
        logs: dict[str, Any] = {
            "positive_fg": terms.positive_fg.detach(),
            "positive_bg": terms.positive_bg.detach(),
            "negative": terms.negative.detach(),
        }
        total = terms.total
        if batch.hints is not None:
            hint = hint_loss(
                out.logits,
                batch.hints,
                fg_threshold=a.hint_fg,
                bg_threshold=a.hint_bg,
                smoothing=a.hint_smoothing,
                mode=a.hint_mode,
            )
            total = total + a.hint_weight * hint
            logs["hint"] = hint.detach()
        return LossOutput(total, logs)

    def after_step(self, ctx: StepContext) -> None:
        """At the end of each epoch, orient the model (see the module docstring)."""
        epochs = self.config.train.epochs
        per_epoch = max(1, ctx.total_steps // epochs)
        if (ctx.step + 1) % per_epoch == 0 or ctx.step + 1 == ctx.total_steps:
            self.orient(ctx.device)

    # ------------------------------------------------------------------------- direction

    def direction_ids(self) -> list[str]:
        """The training images the border prior looks at (seeded by ``train.seed``)."""
        if self._dataset is None:
            raise RuntimeError("train_data() was not called: no training split known")
        ids = list(self._dataset.ids)
        order = np.random.default_rng([self.config.train.seed, 0xD1]).permutation(len(ids))
        return [ids[i] for i in order[: self.args.direction_images]]

    @torch.no_grad()
    def detect(self, device: torch.device) -> DirectionEstimate:
        """The border-prior estimate for the current weights (does not change them)."""
        size = self.config.data.crop_size
        batch_size = self.config.train.batch_size
        ids = self.direction_ids()
        was_training = self.model.training
        self.model.eval()
        maps = []
        try:
            for start in range(0, len(ids), batch_size):
                images = []
                for sample_id in ids[start : start + batch_size]:
                    img = to_tensor(self._dataset.load_image(sample_id))
                    img = TF.resize(img, [size, size], InterpolationMode.BICUBIC, antialias=True)
                    images.append(normalize(img))
                logits = self.model(torch.stack(images).to(device)).logits
                maps.append(torch.sigmoid(logits.float()).cpu())
        finally:
            self.model.train(was_training)
        h, w = maps[0].shape[-2:]
        border = self.args.direction_border or max(1, round(min(h, w) / 7))
        return detect_direction(maps, border=border, rule=self.args.direction_rule)

    def orient(self, device: torch.device) -> None:
        """Decide and store the direction as ``train.strategy_args.direction`` says."""
        a: CCAMArgs = self.args
        if a.direction == "positive":
            self.model.set_direction(1)
            self.direction_source = "fixed"
            return
        self.estimate = self.detect(device)
        if a.direction == "auto" and a.hints is not None:
            self.model.set_direction(1)
            self.direction_source = "hints"
        else:
            self.model.set_direction(self.estimate.direction)
            self.direction_source = "border prior"

    # ------------------------------------------------------------------------- validation, export

    def validation_hooks(
        self, dataset: SegmentationDataset, progress: bool = True
    ) -> list[ValidationHook]:
        """Saliency mIoU/precision/recall at 0.2 when the split has masks, else none."""
        if not has_masks(dataset):
            return []
        return [SaliencyValidation(dataset, ccam_scores, progress=progress)]

    def export_meta(self) -> dict[str, Any]:
        """The stored direction, how it was decided, the border-prior estimate, the hints."""
        direction: dict[str, Any] = {
            "value": int(self.model.direction.item()),
            "source": self.direction_source,
        }
        if self.estimate is not None:
            e = self.estimate
            direction.update(
                detected=e.direction, border=e.border, interior=e.interior, images=e.images
            )
        return {"direction": direction, "alpha": self.args.alpha, "hints": self.args.hints}

    def extra_state(self) -> dict[str, Any]:
        """How the stored direction was decided (the value itself is a model buffer)."""
        e = self.estimate
        return {
            "direction_source": self.direction_source,
            "estimate": None if e is None else [e.direction, e.border, e.interior, e.images],
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.direction_source = state.get("direction_source", self.direction_source)
        e = state.get("estimate")
        self.estimate = None if e is None else DirectionEstimate(*e)
