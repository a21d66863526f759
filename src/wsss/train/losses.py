"""Classification losses of the CAM classifiers (METHODS.md §1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["multilabel_soft_margin", "smooth_labels"]


def smooth_labels(labels: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Label smoothing toward 0.5: ``(1 − ε)·y + ε/2`` (ε = 0.1 gives 0.95 / 0.05)."""
    if epsilon == 0:
        return labels
    return labels * (1.0 - epsilon) + epsilon / 2


def multilabel_soft_margin(
    logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0
) -> torch.Tensor:
    """Multi-label soft margin ``ℓ(z, LS_ε(y))``: BCE-with-logits averaged over classes, then batch.

    Args:
        logits: ``B×C`` logits.
        targets: ``B×C`` targets in [0, 1] (soft targets, e.g. from MixUp, allowed).
        smoothing: Label-smoothing ε.
    """
    targets = smooth_labels(targets.to(logits.dtype), smoothing)
    return F.multilabel_soft_margin_loss(logits, targets)
