"""Tensor operations shared by the P-NOC family of strategies (METHODS.md §2).

Puzzle-CAM's 2×2 tiling and its inverse on maps, the reconstruction loss, the sampling of the
class to erase, and the two erasing masks: OC-CSE's soft, differentiable one and P-NOC's hard,
thresholded one. All are batched tensor operations without Python loops over images.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from wsss.errors import ConfigError

__all__ = [
    "check_ramp",
    "hard_erase_keep",
    "merge",
    "reconstruction_loss",
    "remove_class",
    "sample_present_class",
    "soft_erase_mask",
    "tile",
]

EPS = 1e-5


def check_ramp(spec: tuple[float, float, float], name: str) -> None:
    """Check a ``(start, end, fraction)`` ramp setting for :meth:`StepContext.ramp`.

    Raises:
        ConfigError: ``fraction`` is not positive (the ramp would divide by zero).
    """
    if len(spec) != 3 or spec[2] <= 0:
        raise ConfigError(
            f"train.strategy_args.{name} must be [start, end, fraction] with fraction > 0, "
            f"got {list(spec)}"
        )


def tile(x: torch.Tensor) -> torch.Tensor:
    """Split every image into its 2×2 quarters, stacked tile-major along the batch.

    Args:
        x: ``B×C×H×W`` with even ``H`` and ``W``.

    Returns:
        ``4B×C×H/2×W/2``: ``[TL of all B, TR of all B, BL of all B, BR of all B]``.

    Raises:
        ValueError: ``H`` or ``W`` is odd (the quarters would not be equal).
    """
    if x.ndim != 4:
        raise ValueError(f"tile expects a B×C×H×W tensor, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"tile needs an even height and width, got {h}×{w}")
    # B×C×(2·h')×(2·w') → (row, col)×B×C×h'×w', rows and columns in row-major order.
    quarters = x.reshape(b, c, 2, h // 2, 2, w // 2).permute(2, 4, 0, 1, 3, 5)
    return quarters.reshape(4 * b, c, h // 2, w // 2)


def merge(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`tile`: reassemble ``4B×C×h×w`` quarters into ``B×C×2h×2w``."""
    if x.ndim != 4 or x.shape[0] % 4:
        raise ValueError(f"merge expects 4B×C×h×w tiles (tile-major), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    b = n // 4
    whole = x.reshape(2, 2, b, c, h, w).permute(2, 3, 0, 4, 1, 5)
    return whole.reshape(b, c, 2 * h, 2 * w)


def reconstruction_loss(
    maps: torch.Tensor, merged: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Puzzle-CAM's ``mean_{b,c,h,w}(y_bc · |A − A_re|)`` on raw maps.

    Args:
        maps: ``B×C×h×w`` maps of the whole images.
        merged: ``B×C×h×w`` maps of the tiles, merged.
        labels: ``B×C`` unsmoothed labels; absent classes contribute zeros to the mean.
    """
    if maps.shape != merged.shape:
        raise ValueError(
            f"maps {tuple(maps.shape)} and merged tile maps {tuple(merged.shape)} differ"
        )
    weights = labels.to(maps.dtype)[:, :, None, None]
    return (weights * (maps - merged).abs()).mean()


def sample_present_class(
    labels: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one class per image, uniformly among its present classes (``label > 0``).

    Args:
        labels: ``B×C`` labels (soft labels count a class as present when positive).
        generator: Random generator (default: torch's global one on ``labels``' device).

    Returns:
        ``(B,)`` ``int64`` class indices; ``-1`` for an image without any present class.
    """
    present = labels > 0
    has_any = present.any(dim=1)
    # A row of zeros cannot be sampled: give such rows uniform weights, then discard them.
    weights = torch.where(has_any[:, None], present.float(), torch.ones_like(labels).float())
    drawn = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return torch.where(has_any, drawn, torch.full_like(drawn, -1))


def remove_class(labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """A copy of ``labels`` with ``labels[b, classes[b]] = 0`` (``-1`` leaves a row as is)."""
    out = labels.clone()
    rows = torch.nonzero(classes >= 0).squeeze(1)
    out[rows, classes[rows]] = 0
    return out


def _select(maps: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``maps[b, classes[b]]`` as ``B×1×h×w``; zeros for ``classes[b] = -1``."""
    index = classes.clamp(min=0)[:, None, None, None].expand(-1, 1, *maps.shape[2:])
    picked = maps.gather(1, index)
    return picked * (classes >= 0).to(maps.dtype)[:, None, None, None]


def soft_erase_mask(
    maps: torch.Tensor,
    classes: torch.Tensor,
    size: tuple[int, int],
    norm: Literal["batch", "image"] = "batch",
) -> torch.Tensor:
    """OC-CSE's erasing mask ``m = up(ReLU(A_r)) / (max + 1e-5)``, differentiable.

    Args:
        maps: ``B×C×h×w`` raw (pre-ReLU) maps of the generator.
        classes: ``(B,)`` class to erase per image (``-1``: erase nothing).
        size: Image size ``(H, W)``; the map is upsampled bilinearly before normalising.
        norm: ``batch`` divides by one maximum over the whole batch (the reference code);
            ``image`` by each image's maximum (the paper).

    Returns:
        ``B×1×H×W`` mask in [0, 1]; the image to classify is ``x · (1 − m)``.
    """
    if norm not in ("batch", "image"):
        raise ValueError(f"norm must be 'batch' or 'image', got {norm!r}")
    mask = F.interpolate(
        F.relu(_select(maps, classes)), size=size, mode="bilinear", align_corners=False
    )
    if norm == "batch":
        peak = mask.amax()
    else:
        peak = mask.amax(dim=(1, 2, 3), keepdim=True)
    return mask / (peak + EPS)


def hard_erase_keep(
    maps: torch.Tensor,
    classes: torch.Tensor,
    size: tuple[int, int],
    threshold: float,
    order: Literal["upsample_first", "normalize_first"] = "upsample_first",
) -> torch.Tensor:
    """P-NOC's keep mask ``[ψ(A_r) ≤ δ]`` with ψ normalised by each image's maximum.

    Args:
        maps: ``B×C×h×w`` raw maps (detach them: the mask is not differentiable).
        classes: ``(B,)`` class to erase per image (``-1``: keep the whole image).
        size: Image size ``(H, W)``.
        threshold: δ; pixels with ``ψ > δ`` are erased.
        order: ``upsample_first`` (the reference code, like :func:`soft_erase_mask`): ReLU,
            bilinear upsampling to ``size``, then division by the maximum;
            ``normalize_first``: ReLU, division by the maximum of the small map, then
            upsampling (``wsss`` before it followed the reference; erases slightly less).

    Returns:
        ``B×1×H×W`` float mask, 1 where the image is kept, 0 where it is erased.
    """
    if order not in ("upsample_first", "normalize_first"):
        raise ValueError(f"order must be 'upsample_first' or 'normalize_first', got {order!r}")
    psi = F.relu(_select(maps, classes))
    if order == "upsample_first":
        psi = F.interpolate(psi, size=size, mode="bilinear", align_corners=False)
    psi = psi / (psi.amax(dim=(2, 3), keepdim=True) + EPS)
    if order == "normalize_first":
        psi = F.interpolate(psi, size=size, mode="bilinear", align_corners=False)
    return (psi <= threshold).to(maps.dtype)
