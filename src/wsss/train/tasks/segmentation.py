"""The ``segmentation`` task: a semantic segmentation network trained on masks (METHODS.md §8).

``train.task=segmentation`` trains a registered segmentation model (``deeplabv3plus`` by
default, or ``deeplabv2``) on the pseudo masks of a folder of palette PNGs
(``train.strategy_args.masks``, one ``<id>.png`` per training image, 255 = ignore) or, without
a folder, on the split's ground-truth masks (a fully supervised upper bound). Each image and
its mask get the same random long-side resize (the mask with nearest neighbours), horizontal
flip and crop (masks padded with 255); CutMix pastes masks too and MixUp is refused. The loss
is the pixel-wise cross-entropy over labelled pixels with ``train.label_smoothing`` as torch's
label smoothing (:func:`~wsss.models.segmentation.segmentation_loss`).

The rest comes from the shared settings, as the P-NOC code trains DeepLabV3+: SGD
(``train.momentum`` 0.9, ``train.nesterov``), lr 0.007, weight decay 4e-5, poly schedule,
four parameter groups with ``train.lr_multipliers`` (encoder 1×/2×, ASPP, decoder and
classifier 10×/20×); the ``voc12-deeplabv3plus`` preset sets them. The network is built from
``model.backbone``, ``model.output_stride`` (DeepLabV2 papers: 8), ``model.pretrained`` and
``model.weights``, with ``C + 1`` outputs (background at 0).

Validation on ``data.val_split`` reports ``val/miou`` (percent, every class including the
background, as :mod:`wsss.evaluate`) and ``val/loss`` from one forward pass per image at its own
size (no TTA: a fast monitor, not the final evaluation of :mod:`wsss.maps.segment`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from wsss.config import Config
from wsss.data.base import IGNORE_INDEX, SegmentationDataset
from wsss.data.loader import ClassificationDataset
from wsss.errors import ConfigError, DataError
from wsss.evaluate.confusion import ConfusionMatrix
from wsss.evaluate.metrics import summary_scores
from wsss.io.masks import MaskStore
from wsss.maps.segmentation_infer import segmentation_logits
from wsss.models.registry import create_model
from wsss.models.segmentation import segmentation_loss
from wsss.runtime.progress import progress_bar, wants_bars
from wsss.train.tasks.base import TASKS, LossOutput, StepContext, Task
from wsss.train.validation import ValidationHook

__all__ = [
    "PseudoMaskDataset",
    "SegmentationArgs",
    "SegmentationTask",
    "SegmentationValidation",
]

ARCHITECTURES = ("deeplabv3plus", "deeplabv2")


@dataclass
class SegmentationArgs:
    """Settings of the ``segmentation`` task (``train.strategy_args``).

    Attributes:
        masks: Folder of training masks ``<id>.png`` (pseudo masks; 255 = ignore). None
            trains on the split's ground-truth masks (an upper bound, not weak supervision).
        architecture: Registered segmentation model: ``deeplabv3plus`` or ``deeplabv2``.
        model_options: Further constructor arguments of the model (e.g. ``atrous_rates``,
            ``decoder_norm``, ``dropout`` of DeepLabV3+; see :mod:`wsss.models.segmentation`).
    """

    masks: str | None = None
    architecture: Literal["deeplabv3plus", "deeplabv2"] = "deeplabv3plus"
    model_options: dict[str, Any] = field(default_factory=dict)


class PseudoMaskDataset(SegmentationDataset):
    """A split whose masks are read from a folder instead of the ground truth.

    Images, labels, ids and classes are those of ``dataset``; ``load_mask`` reads
    ``<folder>/<id>.png``.

    Args:
        dataset: The split.
        masks: The folder of masks.

    Raises:
        DataError: Some images of the split have no mask file (the message names them).
    """

    def __init__(self, dataset: SegmentationDataset, masks: str | MaskStore) -> None:
        self.dataset = dataset
        self.store = masks if isinstance(masks, MaskStore) else MaskStore(masks)
        self.root, self.split = dataset.root, dataset.split
        self.classes, self.ids = list(dataset.classes), list(dataset.ids)
        self.palette = dataset.palette
        missing = [i for i in self.ids if not self.store.path(i).is_file()]
        if missing:
            shown = ", ".join(repr(i) for i in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DataError(
                f"{self.store.root}: no mask for {len(missing)} of the {len(self.ids)} images of "
                f"split {dataset.split!r} ({shown}{more}); make the pseudo masks of this split "
                f"first or point train.strategy_args.masks at the right folder",
                path=self.store.path(missing[0]),
                kind="missing mask",
            )

    def load_image(self, sample_id: str) -> np.ndarray:
        return self.dataset.load_image(sample_id)

    def load_label(self, sample_id: str) -> np.ndarray:
        return self.dataset.load_label(sample_id)

    def load_mask(self, sample_id: str) -> np.ndarray:
        return self.store.load(sample_id)

    def mask_source(self, sample_id: str) -> str:
        """Where the mask of ``sample_id`` comes from (for messages)."""
        return str(self.store.path(sample_id))


class _MaskedSamples(ClassificationDataset):
    """Training samples that must have a mask of the image's size."""

    def _load(self, item: int | tuple[int, int]) -> dict:
        index, seed = item if isinstance(item, tuple) else (item, None)
        sample_id = self.dataset.ids[index]
        image = self.dataset.load_image(sample_id)
        mask = self.dataset.load_mask(sample_id)
        source = getattr(self.dataset, "mask_source", None)
        where = source(sample_id) if source else f"the ground-truth mask of {sample_id!r}"
        if mask is None:
            raise DataError(
                f"split {self.dataset.split!r} has no ground-truth mask for {sample_id!r}; "
                f"train on pseudo masks with train.strategy_args.masks=FOLDER",
                kind="missing mask",
            )
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{where}: mask is {mask.shape[0]}×{mask.shape[1]} but image {sample_id!r} is "
                f"{image.shape[0]}×{image.shape[1]}; masks must have their image's size",
                kind="bad mask",
            )
        image_t, mask_t = self.transform(image, mask, seed)
        label = torch.tensor(self.dataset.load_label(sample_id), dtype=torch.float32)
        return {
            "image": image_t,
            "label": label,
            "id": sample_id,
            "index": index,
            "seed": seed,
            "mask": mask_t,
        }


class SegmentationValidation:
    """mIoU and cross-entropy of a segmentation network on a split with ground truth.

    One forward pass per image at its own size (no scales, no flip), argmax over classes.
    Reports ``{prefix}/miou`` (percent, over every class including the background, classes
    absent from both ground truth and prediction left out, as :mod:`wsss.evaluate`) and
    ``{prefix}/loss`` (mean cross-entropy over the labelled pixels of the split).

    Args:
        dataset: Split with ground-truth masks.
        prefix: Metric-name prefix.
        progress: Show a progress bar (on a terminal only).

    Raises:
        DataError: (when called) An image has no ground-truth mask.
    """

    oracle = False

    def __init__(
        self, dataset: SegmentationDataset, prefix: str = "val", progress: bool = True
    ) -> None:
        self.name = f"{prefix}-segmentation"
        self.dataset = dataset
        self.prefix = prefix
        self.progress = progress

    @torch.no_grad()
    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Evaluate ``model`` (already in eval mode) on the split."""
        confusion: ConfusionMatrix | None = None
        loss_sum, labelled = 0.0, 0
        # A bar on a terminal only: the engine prints the scores as a line.
        bars = self.progress and wants_bars()
        bar = progress_bar(total=len(self.dataset), desc=self.prefix, enabled=bars, leave=False)
        with bar:
            for sample_id in self.dataset.ids:
                gt = self.dataset.load_mask(sample_id)
                if gt is None:
                    raise DataError(
                        f"validation split {self.dataset.split!r} has no ground-truth mask for "
                        f"{sample_id!r}; set data.val_split to a split with masks (or null)",
                        kind="missing mask",
                    )
                image = self.dataset.load_image(sample_id)
                logits = segmentation_logits(model, image, (1.0,), flip=False, device=device)
                if confusion is None:
                    confusion = ConfusionMatrix(logits.shape[0])
                target = torch.from_numpy(np.asarray(gt, dtype=np.int64)).to(logits.device)
                confusion.update(gt, logits.argmax(0).cpu().numpy())
                loss_sum += F.cross_entropy(
                    logits[None], target[None], ignore_index=IGNORE_INDEX, reduction="sum"
                ).item()
                labelled += int((target != IGNORE_INDEX).sum())
                bar.update(1)
        if confusion is None:
            return {}
        miou = float(summary_scores(confusion.matrix)["miou"])
        return {
            f"{self.prefix}/miou": 100.0 * miou if math.isfinite(miou) else math.nan,
            f"{self.prefix}/loss": loss_sum / labelled if labelled else math.nan,
        }


@TASKS.register("segmentation")
class SegmentationTask(Task):
    """Trains a segmentation network on masks; see the module docstring.

    Args:
        config: The run's configuration.
        classes: Foreground class names of the training set.
        args: A :class:`SegmentationArgs`.

    Raises:
        ConfigError: ``model.num_classes`` contradicts the training set, or bad model options.
    """

    Args = SegmentationArgs
    uses_masks = True

    def __init__(self, config: Config, classes: list[str], args: Any = None) -> None:
        super().__init__(config, classes, args)
        if config.model.num_classes not in (None, len(self.classes)):
            raise ConfigError(
                f"model.num_classes={config.model.num_classes} but the dataset has "
                f"{len(self.classes)} classes"
            )
        if self.args.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"train.strategy_args.architecture={self.args.architecture!r}; choose one of "
                + ", ".join(ARCHITECTURES)
            )
        m = config.model
        reserved = {"backbone", "num_classes", "output_stride", "pretrained", "weights"}
        clash = sorted(reserved & set(self.args.model_options))
        if clash:
            raise ConfigError(
                f"train.strategy_args.model_options cannot set {clash}: use model.{clash[0]}"
            )
        self.model = create_model(
            self.args.architecture,
            backbone=m.backbone,
            num_classes=self.num_classes + 1,
            output_stride=m.output_stride,
            pretrained=m.pretrained,
            weights=m.weights,
            **self.args.model_options,
        )

    def train_data(self, dataset: SegmentationDataset) -> Dataset:
        """Augmented images with their masks (the folder's, or the ground truth)."""
        if self.args.masks is not None:
            dataset = PseudoMaskDataset(dataset, self.args.masks)
        return _MaskedSamples(dataset, self.train_transform(), with_masks=True)

    def loss(self, phase: str, batch: Any, ctx: StepContext) -> LossOutput:
        """Cross-entropy over the labelled pixels (255 ignored), optionally label-smoothed."""
        logits = self.net("model")(batch.images)
        loss = segmentation_loss(logits, batch.masks, self.config.train.label_smoothing)
        return LossOutput(loss)

    def validation_hooks(
        self, dataset: SegmentationDataset, progress: bool = True
    ) -> list[ValidationHook]:
        """``val/miou`` and ``val/loss`` on the validation split's ground truth."""
        return [SegmentationValidation(dataset, progress=progress)]

    def export_meta(self) -> dict[str, Any]:
        """The mask folder trained on (None: ground truth) and the ignore index."""
        return {"masks": self.args.masks, "ignore_index": IGNORE_INDEX}
