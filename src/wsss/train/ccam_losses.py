"""Losses of C²AM and C²AM-H (METHODS.md §6): rank-weighted contrast and foreground hints.

Everything here is computed in ``float32`` with autocast switched off, whatever the inputs'
dtype: ``−log`` of similarities clamped at 5e-4 / 0.9995 and the exponential rank weights are
not safe in half precision.

Batches, accumulation and DDP. The rank weights and the ``n²`` pairs are taken over the
**forward (micro) batch**. Gradient accumulation over ``k`` micro batches of ``n/k`` images is
therefore not the loss of one ``n``-image batch: each image is contrasted with ``n/k − 1``
others instead of ``n − 1``, and its rank weights decay over a shorter row. Under DDP each
process likewise sees only its own micro batch unless ``gather=True``: then every process
contrasts its images with the whole global batch (an autograd-aware ``all_gather``), its rows
are ranked over all ``world_size · n`` columns, and the gradient DDP averages is exactly the
gradient of the single-process loss over the global batch (checked by a two-process test).
The original code trains with ``nn.DataParallel``, which gathers the features of every GPU
before the loss, i.e. the ``gather=True`` behaviour; accumulation cannot be made equivalent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wsss.errors import ConfigError
from wsss.io.maps import ClassMaps
from wsss.train.losses import smooth_labels

__all__ = [
    "ALPHA_WSOL",
    "ALPHA_WSSS",
    "CCAMLoss",
    "ccam_loss",
    "clamped_cosine",
    "hint_loss",
    "hint_prior",
    "rank_weights",
]

ALPHA_WSSS = 0.25
ALPHA_WSOL = 0.05
SIM_MIN = 5e-4
SIM_MAX = 0.9995


@contextmanager
def _fp32(device: torch.device) -> Iterator[None]:
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def clamped_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``s_ij = clamp(cos(a_i, b_j), 5e-4, 0.9995)`` for ``a`` (``n×D``) and ``b`` (``m×D``)."""
    a = F.normalize(a.float(), dim=1)
    b = F.normalize(b.float(), dim=1)
    return (a @ b.T).clamp(SIM_MIN, SIM_MAX)


def rank_weights(sim: torch.Tensor, alpha: float) -> torch.Tensor:
    """``w_ij = exp(−α·(rank_ij − 1))``, ranking each row of ``sim`` by decreasing similarity.

    ``rank_ij = 0`` for the most similar column of row ``i`` (the image itself on the
    diagonal of ``S^f``/``S^b``, weight ``e^α``), 1 for the next (weight 1), and so on, as in
    the reference code. Ties keep column order (a stable sort); tied entries have equal
    losses, so this does not change the loss value. The weights carry no gradient.
    """
    order = torch.sort(sim.detach(), dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    positions = torch.arange(sim.shape[1], device=sim.device).expand_as(order)
    rank.scatter_(1, order, positions)
    return torch.exp(-alpha * (rank.float() - 1.0))


@dataclass
class CCAMLoss:
    """The C²AM loss and its terms (each a scalar tensor).

    Attributes:
        total: ``positive_fg + positive_bg + negative``.
        positive_fg: Mean of ``w^f_ij · (−log S^f_ij)``.
        positive_bg: Mean of ``w^b_ij · (−log S^b_ij)``.
        negative: Mean of ``−log(1 − S^n_ij)``, ``S^n_ij = s(b_i, f_j)``.
    """

    total: torch.Tensor
    positive_fg: torch.Tensor
    positive_bg: torch.Tensor
    negative: torch.Tensor


def _gather_rows(x: torch.Tensor) -> torch.Tensor:
    """All processes' ``x`` stacked in rank order, with gradients flowing back to each owner."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return x
    from torch.distributed.nn.functional import all_gather

    sizes = [
        torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())
    ]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    if len({int(s) for s in sizes}) != 1:
        raise ConfigError(
            f"C²AM gather=True needs the same micro-batch size on every process, got "
            f"{[int(s) for s in sizes]}: drop the last incomplete batch"
        )
    return torch.cat(all_gather(x), dim=0)


def ccam_loss(
    fg: torch.Tensor, bg: torch.Tensor, alpha: float = ALPHA_WSSS, gather: bool = False
) -> CCAMLoss:
    """The contrastive loss of C²AM over a batch of foreground/background vectors.

    ``S^f = s(f_i, f_j)``, ``S^b = s(b_i, b_j)``, ``S^n = s(b_i, f_j)`` with the clamped
    cosine ``s``; each term is the mean over all ``n²`` pairs, the diagonal included (the
    reference code; the P-NOC paper's Eq. 11 writes ``1/(n(n−1))`` over ``i ≠ j``, but the
    diagonal is clamped to 0.9995 and only adds a constant ``e^α·(−log 0.9995)/n``).

    Args:
        fg: ``n×D`` foreground vectors.
        bg: ``n×D`` background vectors.
        alpha: Rank-weight decay: 0.25 for WSSS (:data:`ALPHA_WSSS`), 0.05 for WSOL.
        gather: Under ``torch.distributed``, contrast this process's rows with the columns of
            every process (see the module docstring); a no-op without a process group.

    Returns:
        The :class:`CCAMLoss`, in ``float32``.
    """
    if fg.ndim != 2 or fg.shape != bg.shape:
        raise ValueError(f"fg and bg must be n×D of equal shape, got {fg.shape} and {bg.shape}")
    with _fp32(fg.device):
        fg, bg = fg.float(), bg.float()
        fg_all = _gather_rows(fg) if gather else fg
        bg_all = _gather_rows(bg) if gather else bg

        def positive(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
            sim = clamped_cosine(rows, columns)
            return (rank_weights(sim, alpha) * -torch.log(sim)).mean()

        positive_fg = positive(fg, fg_all)
        positive_bg = positive(bg, bg_all)
        negative = -torch.log(1.0 - clamped_cosine(bg, fg_all)).mean()
    return CCAMLoss(positive_fg + positive_bg + negative, positive_fg, positive_bg, negative)


def hint_prior(maps: ClassMaps) -> np.ndarray:
    """The C²AM-H hint map ``A = max_c`` of an image's full-resolution class maps.

    Any class-map folder serves (CAM, LPCAM, a P-NOC run). An image without class maps
    (no labelled class) gives an all-zero map, hence no foreground hint.

    Returns:
        ``H×W`` ``float32``.
    """
    if len(maps.keys) == 0:
        return np.zeros(maps.hr.shape[1:], dtype=np.float32)
    return maps.hr.max(axis=0)


def hint_loss(
    logits: torch.Tensor,
    prior: torch.Tensor,
    fg_threshold: float = 0.4,
    bg_threshold: float | None = None,
    smoothing: float = 0.1,
    mode: str = "bicubic",
) -> torch.Tensor:
    """C²AM-H hint loss: BCE-with-logits of ``ℓ`` at the hint pixels (P-NOC §4).

    The prior is resized to the logit grid (``mode``; the reference uses bicubic for class
    maps, nearest for mask files), then pixels with ``A ≥ fg_threshold`` are foreground hints
    with target ``LS_ε(1) = 1 − ε/2`` (0.95 for ε = 0.1). With ``bg_threshold`` set, pixels
    with ``A < bg_threshold`` are background hints with target ``ε/2`` (described in the
    paper, δ_bg = 0.1; unused in its code). The loss is the mean over all hint pixels of the
    batch (as in the reference), so a batch without hint pixels gives exactly 0 (the
    reference gives NaN), still connected to the graph.

    The hints anchor the partition: foreground is high ``ℓ``, so the direction is +1.

    Args:
        logits: ``B×1×h×w`` raw head output ``ℓ`` (not oriented).
        prior: ``B×H×W`` or ``B×1×H×W`` hint map ``A`` in [0, 1] (:func:`hint_prior`),
            aligned with the augmented image.
        fg_threshold: δ_fg (default 0.4).
        bg_threshold: δ_bg, or None (default) for foreground hints only.
        smoothing: Label smoothing ε (default 0.1).
        mode: ``"bicubic"`` (default), ``"bilinear"`` or ``"nearest"``.

    Returns:
        A ``float32`` scalar (multiply by λ_h, default 1, in the training task).
    """
    if mode not in ("bicubic", "bilinear", "nearest"):
        raise ValueError(f"mode must be 'bicubic', 'bilinear' or 'nearest', got {mode!r}")
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits must be B×1×h×w, got {tuple(logits.shape)}")
    if bg_threshold is not None and bg_threshold > fg_threshold:
        raise ValueError(f"bg_threshold {bg_threshold} is above fg_threshold {fg_threshold}")
    if prior.ndim == 3:
        prior = prior[:, None]
    if prior.ndim != 4 or prior.shape[1] != 1 or prior.shape[0] != logits.shape[0]:
        raise ValueError(
            f"prior must be B×H×W or B×1×H×W with B = {logits.shape[0]}, got {tuple(prior.shape)}"
        )
    with _fp32(logits.device):
        logits = logits.float()
        prior = prior.to(device=logits.device, dtype=torch.float32)
        if prior.shape[-2:] != logits.shape[-2:]:
            kwargs = {} if mode == "nearest" else {"align_corners": False}
            prior = F.interpolate(prior, size=logits.shape[-2:], mode=mode, **kwargs)
        fg = prior >= fg_threshold
        target = smooth_labels(fg.float(), smoothing)
        hinted = fg if bg_threshold is None else fg | (prior < bg_threshold)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        count = hinted.sum()
        total = (bce * hinted).sum()
        return total / count.clamp(min=1)
