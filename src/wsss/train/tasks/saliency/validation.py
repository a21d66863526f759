"""Validation of saliency models: saliency mIoU of single-scale maps on a split with masks.

A monitoring metric, not the evaluation protocol: one forward per image at its own size (no
test-time augmentation), a pixel is salient when its score is strictly above the fixed
threshold (0.2, the pseudo-saliency threshold of METHODS.md §6), ground truth reduced to
background vs any class (``wsss.evaluate.saliency``, protocol ``binary``). Scores are percent,
as in ``wsss eval``. No oracle threshold is chosen here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from wsss.data.base import SegmentationDataset
from wsss.data.transforms import EvalTransform
from wsss.evaluate.saliency import SaliencySweep
from wsss.runtime.progress import wants_bars

__all__ = ["SaliencyValidation", "ccam_scores", "detector_scores", "has_masks"]

Scores = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def ccam_scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``B×H×W`` C²AM saliency of ``x``: ReLU of the oriented logits, resized, max-normalised.

    One scale of the inference of METHODS.md §6 (bilinear to the input size, then each map
    divided by its maximum + 1e-5).
    """
    logits = model.saliency_logits(x).float().relu()
    up = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return up / (up.flatten(1).amax(1).view(-1, 1, 1) + 1e-5)


def detector_scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``B×H×W`` probability of the salient class (channel 1) of a two-class detector."""
    return torch.softmax(model(x).float(), dim=1)[:, 1]


def has_masks(dataset: SegmentationDataset) -> bool:
    """Whether the split has ground-truth masks (judged on its first image)."""
    return len(dataset) > 0 and dataset.load_mask(dataset.ids[0]) is not None


class SaliencyValidation:
    """``{prefix}/saliency_miou``, ``…_precision`` and ``…_recall`` at a fixed threshold.

    Args:
        dataset: Split with ground-truth masks.
        scores: ``scores(model, x)`` → ``B×H×W`` saliency in [0, 1] for a normalised batch.
        threshold: Salient when the score is strictly above it.
        prefix: Metric-name prefix.
        progress: Show a progress bar (on a terminal only).
    """

    oracle = False

    def __init__(
        self,
        dataset: SegmentationDataset,
        scores: Scores,
        threshold: float = 0.2,
        prefix: str = "val",
        progress: bool = True,
    ) -> None:
        self.name = f"{prefix}-saliency"
        self.dataset = dataset
        self.scores = scores
        self.threshold = threshold
        self.prefix = prefix
        self.progress = progress

    @torch.no_grad()
    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Evaluate ``model`` (already in eval mode) on the split."""
        sweep = SaliencySweep("binary", threshold=self.threshold, thresholds=[self.threshold])
        transform = EvalTransform()
        bars = self.progress and wants_bars()
        for sample_id in tqdm(self.dataset.ids, desc=self.prefix, leave=False, disable=not bars):
            image, _ = transform(self.dataset.load_image(sample_id))
            score = self.scores(model, image[None].to(device))[0].cpu().numpy()
            sweep.update(self.dataset.load_mask(sample_id), score, key=sample_id)
        r = sweep.results()
        p = self.prefix
        nan = float("nan")
        return {
            f"{p}/saliency_miou": nan if r["miou"] is None else r["miou"],
            f"{p}/saliency_precision": nan if r["precision"] is None else r["precision"],
            f"{p}/saliency_recall": nan if r["recall"] is None else r["recall"],
        }
