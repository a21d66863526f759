"""IRN's random walk on the stride-4 grid, as sparse neighbour products instead of dense powers.

The reference (IRN ``misc/indexing.py``, copied by Puzzle-CAM, LPCAM and P-NOC) builds the
dense ``N×N`` affinity matrix of the ``N = h·w`` stride-4 pixels (pairs closer than the radius,
``a(u, v) = 1 − max boundary on the line u→v``, 1 on the diagonal), forms the column-normalised
transition matrix ``T = A^β / colsum(A^β)`` (element-wise power, β = 10), squares it eight times
(``T^(2^8)``) and multiplies the seeds by it: ``rw = x · T^256`` with ``x`` the class maps times
``1 − boundary``. At VOC size (``N ≈ 12k``) that is several ``N²`` float matrices (over a
gigabyte) and ``8·2N³`` flops.

:func:`propagate` computes the same ``x · T^256`` as 256 products with the sparse ``T``: each
is a weighted sum over the ``1 + 2D`` neighbours of every pixel (``D`` = 34 directions at
radius 5), done with shifted views of the padded seeds, so the memory is a few ``K×N`` and
``(1 + 2D)×N`` arrays. :func:`propagate_dense` is the reference formulation, kept for tests
and the benchmark.

Background: every reference walks only the foreground class maps and adds the background as a
constant plane *after* the walk, upsampling and max-normalisation (IRN
``step/make_sem_seg_labels.py``, LPCAM likewise, Puzzle-CAM ``inference_rw.py`` and P-NOC
``scripts/rw/inference.py`` + ``make_pseudo_labels.py``); :func:`random_walk` does the same,
and :func:`wsss.refine.pseudo_masks.pseudo_mask` adds the plane.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from wsss.errors import ConfigError, DataError
from wsss.io.maps import ClassMaps
from wsss.refine.paths import PathIndex

__all__ = [
    "RW_BACKGROUND",
    "propagate",
    "propagate_dense",
    "random_walk",
    "random_walk_maps",
    "transition_weights",
]

# Background score added after the walk (METHODS §7).
RW_BACKGROUND: dict[str, float] = {"irn": 0.25, "pnoc": 0.30, "lpcam": 0.35}


@functools.lru_cache(maxsize=8)
def _path_index(radius: int) -> PathIndex:
    return PathIndex(radius)


def _check(seeds: torch.Tensor, boundary: torch.Tensor) -> None:
    if boundary.ndim != 2:
        raise DataError(f"boundary must be an h×w map, got shape {tuple(boundary.shape)}")
    if seeds.ndim != 3 or seeds.shape[1:] != boundary.shape:
        raise DataError(
            f"seeds must be K×h×w with h×w = {tuple(boundary.shape)} (the boundary map), "
            f"got {tuple(seeds.shape)}"
        )


def pair_affinity(boundary: torch.Tensor, radius: int = 5) -> tuple[np.ndarray, torch.Tensor]:
    """Affinity of every pixel to its neighbours in the ``D`` path directions.

    Returns:
        ``directions`` (``D×2``) and ``aff`` (``D×h×w``): ``aff[d, u] = a(u, u + d)``, 0 where
        ``u + d`` is off the grid.
    """
    index = _path_index(radius)
    h, w = boundary.shape
    f = index.floor
    # Pad so that every pixel of the map is a source; pairs leaving the map are masked below.
    padded = F.pad(boundary[None, None], (f, f, 0, f), value=1.0)[0]
    aff = index.affinity(padded).view(index.num_directions, h, w)
    ys = torch.arange(h, device=boundary.device)[None, :, None]
    xs = torch.arange(w, device=boundary.device)[None, None, :]
    dy = torch.as_tensor(index.directions[:, 0], device=boundary.device)[:, None, None]
    dx = torch.as_tensor(index.directions[:, 1], device=boundary.device)[:, None, None]
    inside = (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)
    return index.directions, aff * inside


def transition_weights(
    boundary: torch.Tensor, radius: int = 5, beta: float = 10.0
) -> tuple[np.ndarray, torch.Tensor]:
    """The sparse transition matrix ``T = A^β / colsum(A^β)`` as neighbour weights.

    Returns:
        ``offsets`` (``O×2``, ``O = 1 + 2D``: the pixel itself, the ``D`` directions and their
        opposites) and ``weights`` (``O×h×w``) with ``weights[o, j] = T[j + o, j]``, so that
        ``(y·T)_j = Σ_o weights[o, j] · y_{j+o}``. Each column sums to 1.
    """
    directions, fwd = pair_affinity(boundary, radius)
    f = int(np.abs(directions).max())
    h, w = boundary.shape
    # a(j − d, j) = fwd[d, j − d]: shift each direction's plane by d (zeros where j − d is off).
    padded = F.pad(fwd, (f, f, f, 0))
    bwd = torch.stack(
        [padded[i, f - y : f - y + h, f - x : f - x + w] for i, (y, x) in enumerate(directions)]
    )
    weights = torch.cat([torch.ones_like(boundary)[None], fwd, bwd]).pow_(beta)
    weights /= weights.sum(dim=0, keepdim=True)  # >= 1 thanks to the self-affinity
    offsets = np.concatenate([np.zeros((1, 2), np.int64), directions, -directions])
    return offsets, weights


def propagate(
    seeds: torch.Tensor,
    boundary: torch.Tensor,
    *,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
) -> torch.Tensor:
    """``seeds · T^(2^exp_times)`` by iterative sparse products (no ``N×N`` matrix).

    Args:
        seeds: ``K×h×w`` maps to propagate (already multiplied by ``1 − boundary`` if wanted).
        boundary: ``h×w`` boundary probabilities in [0, 1].
        radius: Neighbourhood radius of the walk (IRN: 5).
        beta: Exponent of the affinities (IRN: 10).
        exp_times: The walk takes ``2**exp_times`` steps (IRN: 8, i.e. 256).

    Returns:
        ``K×h×w``, in the dtype and on the device of ``seeds``.
    """
    _check(seeds, boundary)
    if exp_times < 0:
        raise ConfigError(f"exp_times must be >= 0, got {exp_times}")
    # Weights in float64 (computed once), products in the seeds' dtype.
    offsets, weights = transition_weights(boundary.to(seeds.device, torch.float64), radius, beta)
    weights = weights.to(seeds.dtype)
    f = int(np.abs(offsets).max())
    _, h, w = seeds.shape
    # The large self term last: added first, it would swallow the low bits of the small far
    # terms at every step (a systematic loss; float32 drifted by 3e-4 over 256 steps).
    order = [*range(1, len(offsets)), 0]
    y = seeds
    for _ in range(2**exp_times):
        padded = F.pad(y, (f, f, f, f))
        out = torch.zeros_like(y)
        for o in order:
            dy, dx = offsets[o]
            out.addcmul_(weights[o], padded[:, f + dy : f + dy + h, f + dx : f + dx + w])
        y = out
    return y


def propagate_dense(
    seeds: torch.Tensor,
    boundary: torch.Tensor,
    *,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
) -> torch.Tensor:
    """The reference formulation of :func:`propagate`: dense ``A``, ``T``, eight squarings.

    Memory ``O(N²)`` (two ``N×N`` matrices during each squaring); for tests and benchmarks.
    """
    _check(seeds, boundary)
    directions, fwd = pair_affinity(boundary.to(seeds), radius)
    k, h, w = seeds.shape
    n = h * w
    src = torch.arange(n, device=seeds.device).view(h, w)
    a = torch.zeros(n, n, dtype=seeds.dtype, device=seeds.device)
    for i, (dy, dx) in enumerate(directions):
        # Sources whose destination is on the grid.
        y0, y1 = 0, h - dy
        x0, x1 = max(0, -dx), min(w, w - dx)
        s = src[y0:y1, x0:x1].reshape(-1)
        d = src[y0 + dy : y1 + dy, x0 + dx : x1 + dx].reshape(-1)
        v = fwd[i, y0:y1, x0:x1].reshape(-1)
        a[s, d] = v
        a[d, s] = v
    a.fill_diagonal_(1.0)
    t = a.pow_(beta)
    t /= t.sum(dim=0, keepdim=True)
    for _ in range(exp_times):
        t = t @ t
    return (seeds.reshape(k, n) @ t).view(k, h, w)


def random_walk(
    cams: torch.Tensor | np.ndarray,
    boundary: torch.Tensor | np.ndarray,
    size: tuple[int, int],
    *,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
    suppress_seeds: bool = True,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """IRN's class-map refinement: walk the stride-4 maps, upsample ×4, crop, max-normalise.

    Args:
        cams: ``K×h×w`` stride-4 class maps of the image's classes (no background).
        boundary: ``h×w`` boundary probabilities (the boundary network's output).
        size: ``(H, W)`` of the image.
        radius, beta, exp_times: See :func:`propagate`.
        suppress_seeds: Multiply the seeds by ``1 − boundary`` first (the reference does).
        device: Where to compute (default: where ``cams`` is).

    Returns:
        ``(rw, rw_up)``: the walked stride-4 maps divided by their global maximum and the
        ``K×H×W`` maps (bilinear ×4, cropped) divided by theirs, both float32. A walk that
        leaves nothing (all zero) stays zero (the reference divides by zero there).
    """
    cams = torch.as_tensor(cams)
    boundary = torch.as_tensor(boundary)
    device = cams.device if device is None else torch.device(device)
    cams = cams.to(device=device, dtype=torch.float32)
    boundary = boundary.to(device=device, dtype=torch.float32)
    _check(cams, boundary)
    h, w = boundary.shape
    height, width = size
    if not (4 * (h - 1) < height <= 4 * h and 4 * (w - 1) < width <= 4 * w):
        raise DataError(
            f"stride-4 maps of {h}×{w} do not belong to a {height}×{width} image "
            f"(expected {-(-height // 4)}×{-(-width // 4)})"
        )
    seeds = cams * (1 - boundary) if suppress_seeds else cams
    rw = propagate(seeds, boundary, radius=radius, beta=beta, exp_times=exp_times)
    up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)
    up = up[0, :, :height, :width]
    return _max_normalise(rw), _max_normalise(up)


def _max_normalise(x: torch.Tensor) -> torch.Tensor:
    top = x.max() if x.numel() else x.new_zeros(())
    return x / top if top > 0 else torch.zeros_like(x)


def random_walk_maps(
    maps: ClassMaps,
    boundary: torch.Tensor | np.ndarray,
    *,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
    suppress_seeds: bool = True,
    device: str | torch.device | None = None,
) -> ClassMaps:
    """:func:`random_walk` of one image's class maps; the result is again a :class:`ClassMaps`
    (``cam`` = the walked stride-4 maps, ``hr`` = full resolution, same keys), so random-walk
    maps are stored and thresholded like any other map folder."""
    size = maps.hr.shape[1:]
    if len(maps.keys) == 0:
        return ClassMaps(maps.keys, maps.cam, maps.hr)
    rw, up = random_walk(
        maps.cam,
        boundary,
        size,
        radius=radius,
        beta=beta,
        exp_times=exp_times,
        suppress_seeds=suppress_seeds,
        device=device,
    )
    return ClassMaps(maps.keys, rw.cpu().numpy(), up.cpu().numpy())
