"""Validation hooks run by the engine at the end of epochs.

A hook is any object with a ``name``, an ``oracle`` flag and
``__call__(model, device) -> dict[str, float]`` (metric names already prefixed, e.g.
``val/f1``). ``oracle = True`` marks metrics computed on ground truth the method may not use
(e.g. seed mIoU on the training split's masks): a checkpoint they select is labelled oracle.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from wsss.data.base import SegmentationDataset
from wsss.data.loader import ClassificationDataset, Collate
from wsss.data.transforms import normalize, to_tensor
from wsss.runtime.progress import wants_bars
from wsss.train.losses import multilabel_soft_margin

__all__ = ["ClassificationValidation", "ValidationHook", "average_precision", "f1_scores"]


class ValidationHook(Protocol):
    """What the engine calls for validation."""

    name: str
    oracle: bool

    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]: ...


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class average precision (area under the precision-recall steps).

    Args:
        scores: ``N×C`` scores.
        targets: ``N×C`` binary targets.

    Returns:
        ``(C,)`` AP, NaN for classes without positives. Tied scores count as one threshold,
        as in scikit-learn.
    """
    scores = scores.double()
    targets = (targets > 0.5).double()
    order = torch.argsort(scores, dim=0, descending=True, stable=True)
    s = torch.gather(scores, 0, order)
    t = torch.gather(targets, 0, order)
    tp = t.cumsum(0)
    n = torch.arange(1, s.shape[0] + 1, dtype=torch.float64, device=s.device)[:, None]
    # Only the last position of a run of tied scores is a threshold.
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    precision = tp / n
    positives = t.sum(0)
    recall_gain = torch.diff(
        torch.where(last, tp, 0).cummax(0).values, dim=0, prepend=torch.zeros_like(tp[:1])
    )
    ap = (precision * recall_gain * last).sum(0) / positives
    return torch.where(positives > 0, ap, torch.nan)


def f1_scores(
    probs: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5
) -> tuple[float, float]:
    """(macro F1 over classes with any positive or prediction, micro F1) at ``threshold``."""
    pred = probs >= threshold
    true = targets > 0.5
    tp = (pred & true).sum(0).double()
    denom = pred.sum(0).double() + true.sum(0).double()
    valid = denom > 0
    macro = (2 * tp[valid] / denom[valid]).mean().item() if valid.any() else float("nan")
    micro = (2 * tp.sum() / denom.sum()).item() if denom.sum() > 0 else float("nan")
    return macro, micro


class _FitSquare:
    """Resize the long side to ``size`` (bicubic), normalise, pad to ``size×size`` centred."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: np.ndarray, mask=None, seed=None):
        img = to_tensor(image)
        h, w = img.shape[-2:]
        scale = self.size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        img = normalize(TF.resize(img, [nh, nw], InterpolationMode.BICUBIC, antialias=True))
        top, left = (self.size - nh) // 2, (self.size - nw) // 2
        img = TF.pad(img, [left, top, self.size - nw - left, self.size - nh - top], fill=0.0)
        return img, None


class ClassificationValidation:
    """Multi-label classification metrics on a labelled split.

    Images are resized so the long side is ``size`` and padded to a square (a monitoring
    metric, not the TTA inference of the maps stage). Reports ``{prefix}/loss`` (unsmoothed),
    ``{prefix}/map``, ``{prefix}/f1`` (macro, threshold 0.5) and ``{prefix}/f1_micro``.

    Args:
        dataset: Split with image labels.
        size: Long side of the evaluated images (usually the training crop size).
        batch_size: Images per forward pass.
        prefix: Metric-name prefix.
        num_workers: Loader workers.
        progress: Show a progress bar (on a terminal only).
    """

    oracle = False

    def __init__(
        self,
        dataset: SegmentationDataset,
        size: int,
        batch_size: int = 32,
        prefix: str = "val",
        num_workers: int = 0,
        progress: bool = True,
    ) -> None:
        self.name = f"{prefix}-classification"
        self.prefix = prefix
        self.data = ClassificationDataset(dataset, _FitSquare(size))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.progress = progress

    @torch.no_grad()
    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Evaluate ``model`` (already in eval mode) on the split."""
        loader = DataLoader(
            self.data,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=Collate(),
        )
        logits, labels = [], []
        # A bar on a terminal only: the engine prints the scores as a line. tqdm even when
        # disabled: tqdm.auto opens one extra loader iterator (one draw of torch's generator),
        # which the rest of a training run's random stream, hence its weights, depends on.
        bars = self.progress and wants_bars()
        for batch in tqdm(loader, desc=self.prefix, leave=False, disable=not bars):
            logits.append(model(batch.images.to(device)).logits.float().cpu())
            labels.append(batch.labels)
        z, y = torch.cat(logits), torch.cat(labels)
        probs = torch.sigmoid(z)
        macro, micro = f1_scores(probs, y)
        return {
            f"{self.prefix}/loss": multilabel_soft_margin(z, y).item(),
            f"{self.prefix}/map": torch.nanmean(average_precision(probs, y)).item(),
            f"{self.prefix}/f1": macro,
            f"{self.prefix}/f1_micro": micro,
        }
