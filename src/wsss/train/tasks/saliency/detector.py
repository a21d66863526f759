"""The ``saliency_detector`` task: a small segmentation network trained on pseudo-saliency masks.

The C²AM paper (appendix A.2) and P-NOC (§6.2) train PoolNet, a fully supervised salient
object detector, on the pseudo-saliency masks of C²AM / C²AM-H, then use its predictions as
the saliency maps. ``wsss`` stands in a two-class DeepLabV3+ from segmentation-models-pytorch
on any timm encoder (``model.backbone``, ``model.output_stride``; the registered
``deeplabv3plus`` model, so ``load_model`` rebuilds it): pixel-wise cross-entropy on the masks
(``train.label_smoothing``), 255 in the PNGs = salient (class 1), 0 = background (class 0).
Its saliency map is the softmax probability of class 1 at the input resolution. This is not
PoolNet (no edge branch, no pyramid pooling module): the numbers it gives are for this
stand-in, not the paper's detector.

Settings (``train.strategy_args``): ``masks``, the folder of ``<id>.png`` pseudo-saliency
masks of the training split (``wsss saliency pseudo``), required.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from wsss.config import Config
from wsss.data.base import SegmentationDataset
from wsss.data.loader import Batch, ClassificationDataset
from wsss.models.segmentation import DeepLabV3Plus, segmentation_loss
from wsss.train.tasks.base import TASKS, LossOutput, StepContext, Task
from wsss.train.tasks.saliency.data import SaliencyMaskView, check_mask_folder
from wsss.train.tasks.saliency.validation import SaliencyValidation, detector_scores, has_masks
from wsss.train.validation import ValidationHook

__all__ = ["SaliencyDetectorArgs", "SaliencyDetectorTask"]


@dataclass
class SaliencyDetectorArgs:
    """Settings of the ``saliency_detector`` task (``train.strategy_args``).

    Attributes:
        masks: Folder of pseudo-saliency PNGs of the training split (255 salient, 0 not).
    """

    masks: str | None = None


@TASKS.register("saliency_detector")
class SaliencyDetectorTask(Task):
    """Two-class DeepLabV3+ on pseudo-saliency masks; see the module docstring."""

    Args = SaliencyDetectorArgs
    uses_masks = True
    model: DeepLabV3Plus

    def __init__(
        self, config: Config, classes: list[str], args: SaliencyDetectorArgs | None = None
    ) -> None:
        super().__init__(config, classes, args)
        m = config.model
        self.model = DeepLabV3Plus(
            backbone=m.backbone,
            num_classes=2,
            output_stride=m.output_stride,
            pretrained=m.pretrained,
            weights=m.weights,
        )

    def train_data(self, dataset: SegmentationDataset) -> Dataset:
        """Augmented images with their pseudo-saliency masks as class ids 0/1 (255 = pad)."""
        view = SaliencyMaskView(dataset, check_mask_folder(self.args.masks, dataset))
        return ClassificationDataset(view, self.train_transform(), with_masks=True)

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        """Pixel-wise cross-entropy (padding ignored)."""
        logits = self.net("model")(batch.images)
        return LossOutput(segmentation_loss(logits, batch.masks, self.config.train.label_smoothing))

    def validation_hooks(
        self, dataset: SegmentationDataset, progress: bool = True
    ) -> list[ValidationHook]:
        """Saliency mIoU/precision/recall at 0.2 when the split has masks, else none."""
        if not has_masks(dataset):
            return []
        return [SaliencyValidation(dataset, detector_scores, progress=progress)]

    def export_meta(self) -> dict[str, Any]:
        """Marks the checkpoint as a saliency detector (salient class 1) and its masks."""
        return {"saliency": {"salient_class": 1}, "masks": self.args.masks}
