"""The ``boundary`` task: IRN's boundary network trained on affinity labels.

``train.task=boundary`` trains :class:`~wsss.models.boundary.BoundaryNet` (a class-boundary
branch on a frozen backbone) from a folder of affinity labels (palette PNGs, 255 = unknown;
``wsss affinity``). Each sample is an image and its label map, resized, flipped and cropped
together (the label padded with 255); the label is reduced to the boundary map's stride-4
grid by nearest sampling (IRN's ``pil_rescale(label, 0.25, 0)``: pixel ``4i + 2``); pairs
within ``radius`` (IRN: 10, 152 directions) give the positive background, positive foreground
and negative pair sets of :func:`~wsss.refine.paths.affinity_targets`, and the loss is
:func:`~wsss.models.boundary.affinity_loss` on ``1 − max boundary`` along each pair's path.

The frozen backbone starts from the CAM classifier's checkpoint (``train.strategy_args.
classifier``) or, without one, from ``model.weights`` / ``model.pretrained``. Settings
(``train.strategy_args``): ``labels`` (required), ``classifier``, ``radius``, ``dilated``.

IRN decays every parameter of the branch, biases included: ``voc12-boundary`` sets
``train.bias_weight_decay=true`` for that (the engine's default decays weights only, as the CAM
code does; the CPU demo's ``synth-boundary`` keeps that default). The presets set equal lr
multipliers (``[1, 1, 1, 1]``), so every parameter gets the same learning rate as in IRN.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from wsss.config import Config
from wsss.data.base import SegmentationDataset
from wsss.data.loader import ClassificationDataset
from wsss.errors import ConfigError, DataError
from wsss.io.masks import MaskStore
from wsss.models.boundary import BoundaryNet, affinity_loss
from wsss.refine.paths import PathIndex, affinity_targets
from wsss.train.tasks.base import TASKS, LossOutput, StepContext, Task

__all__ = ["BoundaryArgs", "BoundaryTask", "LabelFolderView", "reduce_labels"]


@dataclass
class BoundaryArgs:
    """Settings of the ``boundary`` task (``train.strategy_args``).

    Attributes:
        labels: Folder of affinity labels ``<id>.png`` covering the training split.
        classifier: CAM classifier checkpoint whose backbone initialises the frozen backbone
            (None: ``model.weights`` / ``model.pretrained``).
        radius: Pair radius of the training targets (IRN: 10, i.e. 152 directions).
        dilated: Keep timm's dilated last stage (False: IRN's undilated stride-1 stage).
    """

    labels: str | None = None
    classifier: str | None = None
    radius: int = 10
    dilated: bool = False


class LabelFolderView(SegmentationDataset):
    """``dataset`` whose ``load_mask`` reads a label folder instead of the ground truth.

    Raises:
        DataError: (on :meth:`load_mask`) a label file is missing, unreadable, or not the
            size of its image.
    """

    def __init__(self, dataset: SegmentationDataset, labels: MaskStore) -> None:
        self.dataset, self.labels = dataset, labels
        self.root, self.split = dataset.root, dataset.split
        self.classes, self.ids = dataset.classes, dataset.ids

    def load_image(self, sample_id: str) -> np.ndarray:
        return self.dataset.load_image(sample_id)

    def load_label(self, sample_id: str) -> np.ndarray:
        return self.dataset.load_label(sample_id)

    def load_mask(self, sample_id: str) -> np.ndarray:
        mask = self.labels.load(sample_id)
        image = self.dataset.load_image(sample_id)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{self.labels.path(sample_id)}: labels are {mask.shape[0]}×{mask.shape[1]} but "
                f"the image is {image.shape[0]}×{image.shape[1]}; remake the labels for this "
                f"dataset (wsss affinity)",
                path=self.labels.path(sample_id),
            )
        return mask


def reduce_labels(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Labels of the stride-4 grid: pixel ``(4i + 2, 4j + 2)``, clamped to the crop.

    ``B×H×W`` → ``B×height×width``, as PIL's nearest ×0.25 resize of IRN picks them.
    """
    rows = torch.clamp(torch.arange(height, device=masks.device) * 4 + 2, max=masks.shape[1] - 1)
    cols = torch.clamp(torch.arange(width, device=masks.device) * 4 + 2, max=masks.shape[2] - 1)
    return masks[:, rows][:, :, cols]


@TASKS.register("boundary")
class BoundaryTask(Task):
    """IRN's boundary network on affinity labels (see the module docstring).

    Raises:
        ConfigError: No ``labels`` folder, a bad radius, or a classifier checkpoint that does
            not fit ``model.backbone``.
    """

    Args = BoundaryArgs
    uses_masks = True
    model: BoundaryNet

    def __init__(self, config: Config, classes: list[str], args: Any = None) -> None:
        super().__init__(config, classes, args)
        a: BoundaryArgs = self.args
        if not a.labels:
            raise ConfigError(
                "train.task=boundary needs the affinity labels: set train.strategy_args.labels="
                "DIR (a folder made by wsss affinity)"
            )
        if not os.path.isdir(a.labels):
            raise ConfigError(f"train.strategy_args.labels: {a.labels} is not a folder")
        m = config.model
        weights = a.classifier if a.classifier else m.weights
        self.model = BoundaryNet(
            m.backbone, pretrained=m.pretrained, weights=weights, dilated=a.dilated
        )
        self.index = PathIndex(a.radius)

    def train_data(self, dataset: SegmentationDataset) -> Dataset:
        """Images with their affinity labels; every training image needs a label file."""
        store = MaskStore(self.args.labels)
        missing = [i for i in dataset.ids if not store.path(i).is_file()]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            shown = ", ".join(missing[:3]) + more
            raise DataError(
                f"{store.root}: no affinity labels for {len(missing)} of the {len(dataset)} "
                f"training images ({shown}); make them with wsss affinity for this split",
                path=store.root,
            )
        view = LabelFolderView(dataset, store)
        return ClassificationDataset(view, self.train_transform(), with_masks=True)

    def loss(self, phase: str, batch: Any, ctx: StepContext) -> LossOutput:
        logits = self.net("model")(batch.images)[:, 0].float()  # B×h×w, stride 4
        labels = reduce_labels(batch.masks, *logits.shape[-2:])
        bg_pos, fg_pos, neg = affinity_targets(labels, self.index)
        affinity = self.index.affinity(torch.sigmoid(logits))
        loss, parts = affinity_loss(affinity, bg_pos, fg_pos, neg)
        return LossOutput(loss, parts)

    def export_meta(self) -> dict[str, Any]:
        """Where the labels and the backbone came from, and the training radius."""
        a: BoundaryArgs = self.args
        return {"labels": str(a.labels), "classifier": a.classifier, "radius": a.radius}
