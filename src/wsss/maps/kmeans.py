"""Cosine k-means for clustering local features into prototypes (LPCAM, METHODS.md §5).

Assignment is by cosine similarity; the centre update is either spherical k-means
(``update="normalized"``: direction of the mean of unit-normalised members) or the LPCAM
reference's (``update="reference"``, as ``kmeans_pytorch`` 0.3: plain mean of the raw
features, not re-normalised). Unlike the reference, the loop is seeded, capped, re-seeds empty
clusters and works in chunks so that memory stays bounded on large feature sets.

Memory: besides ``x`` itself, one pass holds ``N`` floats (inverse norms and best
similarities), ``N`` labels and one ``chunk_size×k`` similarity block; no normalised copy of
``x`` and no ``N×N`` or ``N×D`` temporaries are made (member sums are ``one_hot(labels)ᵀ · x``
matrix products per chunk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from wsss.errors import ConfigError

__all__ = ["KMeansResult", "cluster_means", "cosine_kmeans"]

_EPS = 1e-12


@dataclass
class KMeansResult:
    """Outcome of :func:`cosine_kmeans`.

    Attributes:
        centers: ``k×D`` cluster centres (unit norm for ``update="normalized"``, raw member
            means for ``update="reference"``).
        labels: ``(N,)`` ``int64`` cluster index of each point; the centres are computed from
            exactly this assignment (unless the fit used a subsample, see ``sample_size``).
        objective: Mean cosine similarity between each point and its cluster's centre.
        n_iter: Number of assignment/update iterations run.
        converged: Whether the stopping rule was met before ``max_iter``.
    """

    centers: Tensor
    labels: Tensor
    objective: float
    n_iter: int
    converged: bool


def cosine_kmeans(
    x: Tensor,
    k: int,
    init: Literal["k-means++", "random"] | Tensor = "k-means++",
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    update: Literal["normalized", "reference"] = "normalized",
    stop: Literal["shift", "reference"] = "shift",
    chunk_size: int = 65536,
    sample_size: int | None = None,
    device: torch.device | str | None = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` by cosine similarity.

    Args:
        x: ``N×D`` features (any float dtype; computed in float32, or float64 if given).
        k: Number of clusters (``1 <= k <= N``).
        init: ``"k-means++"`` (D² sampling with ``1 − cos`` as the squared distance),
            ``"random"`` (k distinct rows, as the reference) or a ``k×D`` tensor of initial
            centres.
        max_iter: Iteration cap (the reference has none).
        tol: Stopping tolerance, see ``stop``.
        seed: Seed of the initialisation, subsampling and re-seeding.
        update: ``"normalized"`` (spherical k-means) or ``"reference"`` (raw member mean).
        stop: ``"shift"``: stop when ``Σ_k ‖ĉ_new − ĉ_old‖² <= tol`` on unit-normalised
            centres (scale free); ``"reference"``: stop when ``(Σ_k ‖c_new − c_old‖)² < tol`` on
            the centres themselves (the LPCAM code uses ``tol = 5``).
        chunk_size: Rows per matrix product; bounds the temporary ``chunk_size×k`` block.
        sample_size: If set and smaller than ``N``, fit on that many rows drawn without
            replacement (copied: ``sample_size×D``), then assign all ``N`` rows to the fitted
            centres in one more pass (``labels`` and ``objective`` cover all rows; the
            centres are the subsample's).
        device: Where to compute (e.g. ``"cuda"``); default: ``x``'s device.

    Returns:
        The centres, labels, objective, iteration count and convergence flag.

    Empty clusters are re-seeded with the points farthest (lowest cosine) from their current
    centre, taken from clusters with more than one member.
    """
    if x.ndim != 2:
        raise ConfigError(f"k-means input must be an N×D matrix, got shape {tuple(x.shape)}")
    if isinstance(init, Tensor):
        if init.shape != (k, x.shape[-1]):
            raise ConfigError(
                f"k-means initial centres must be k×D = {(k, x.shape[-1])}, got {tuple(init.shape)}"
            )
    elif init not in ("k-means++", "random"):
        raise ConfigError(f"k-means init must be 'k-means++', 'random' or a tensor, got {init!r}")
    if update not in ("normalized", "reference"):
        raise ConfigError(f"k-means update must be 'normalized' or 'reference', got {update!r}")
    if stop not in ("shift", "reference"):
        raise ConfigError(f"k-means stop must be 'shift' or 'reference', got {stop!r}")
    if max_iter < 1 or chunk_size < 1:
        raise ConfigError(f"max_iter and chunk_size must be >= 1, got {max_iter}, {chunk_size}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"k-means needs 1 <= k <= N, got k={k} for N={n} points")

    if device is not None:
        x = x.to(device)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    gen = torch.Generator().manual_seed(seed)

    fit_x = x
    if sample_size is not None and sample_size < n:
        if sample_size < k:
            raise ConfigError(f"k-means sample_size {sample_size} is smaller than k={k}")
        idx = torch.randperm(n, generator=gen)[:sample_size].sort().values
        fit_x = x[idx.to(x.device)]
    inv_norm = _inverse_norms(fit_x, chunk_size, dtype)

    if isinstance(init, Tensor):
        centers = init.to(device=x.device, dtype=dtype)
    else:
        centers = _initialise(fit_x, inv_norm, k, init, gen, chunk_size, dtype)
    if update == "normalized":
        centers = _unit(centers)
    converged = False
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        labels, best = _assign(fit_x, inv_norm, centers, chunk_size, dtype)
        sums, counts = _member_sums(fit_x, inv_norm, labels, k, update, chunk_size, dtype)
        _reseed_empty(fit_x, inv_norm, labels, best, sums, counts, update, dtype)
        new_centers = _centers_from_sums(sums, counts, update)
        if stop == "reference":
            shift = float((new_centers - centers).norm(dim=1).sum() ** 2)
            done = shift < tol
        else:
            shift = float((_unit(new_centers) - _unit(centers)).pow(2).sum())
            done = shift <= tol
        centers = new_centers
        if done:
            converged = True
            break

    if fit_x is not x:
        inv_norm = _inverse_norms(x, chunk_size, dtype)
        labels, _ = _assign(x, inv_norm, centers, chunk_size, dtype)
    objective = _objective(x, inv_norm, centers, labels, chunk_size, dtype)
    return KMeansResult(
        centers=centers, labels=labels, objective=objective, n_iter=n_iter, converged=converged
    )


def cluster_means(x: Tensor, labels: Tensor, k: int, chunk_size: int = 65536) -> Tensor:
    """Plain mean of the raw rows of ``x`` in each of ``k`` clusters (zeros for empty ones).

    Args:
        x: ``N×D`` features.
        labels: ``(N,)`` cluster indices in ``[0, k)``.
        k: Number of clusters.
        chunk_size: Rows per matrix product.

    Returns:
        ``k×D`` member means.
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    labels = labels.to(x.device)
    sums, counts = _member_sums(x, None, labels, k, "reference", chunk_size, dtype)
    return sums / counts.clamp_min(1).unsqueeze(1)


def _unit(v: Tensor) -> Tensor:
    return F.normalize(v, dim=-1, eps=_EPS)


def _chunks(n: int, chunk_size: int) -> range:
    return range(0, n, chunk_size)


def _inverse_norms(x: Tensor, chunk_size: int, dtype: torch.dtype) -> Tensor:
    out = torch.empty(x.shape[0], dtype=dtype, device=x.device)
    for s in _chunks(x.shape[0], chunk_size):
        norms = torch.linalg.vector_norm(x[s : s + chunk_size].to(dtype), dim=1)
        out[s : s + chunk_size] = 1.0 / norms.clamp_min(_EPS)
    return out


def _assign(
    x: Tensor, inv_norm: Tensor, centers: Tensor, chunk_size: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Nearest centre by cosine; returns labels and each point's best cosine."""
    c_hat = _unit(centers).to(dtype).T
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    best = torch.empty(n, dtype=dtype, device=x.device)
    for s in _chunks(n, chunk_size):
        # The row norm is positive, so it does not change the argmax; it only scales the score.
        sim = x[s : s + chunk_size].to(dtype) @ c_hat
        value, index = sim.max(dim=1)
        labels[s : s + chunk_size] = index
        best[s : s + chunk_size] = value * inv_norm[s : s + chunk_size]
    return labels, best


def _member_sums(
    x: Tensor,
    inv_norm: Tensor | None,
    labels: Tensor,
    k: int,
    update: str,
    chunk_size: int,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Per-cluster sums of raw (``reference``) or unit-normalised rows, and member counts."""
    sums = torch.zeros(k, x.shape[1], dtype=dtype, device=x.device)
    for s in _chunks(x.shape[0], chunk_size):
        lab = labels[s : s + chunk_size]
        weights = F.one_hot(lab, k).to(dtype)
        if update == "normalized":
            weights *= inv_norm[s : s + chunk_size].unsqueeze(1)
        sums += weights.T @ x[s : s + chunk_size].to(dtype)
    counts = torch.bincount(labels, minlength=k).to(dtype)
    return sums, counts


def _reseed_empty(
    x: Tensor,
    inv_norm: Tensor,
    labels: Tensor,
    best: Tensor,
    sums: Tensor,
    counts: Tensor,
    update: str,
    dtype: torch.dtype,
) -> None:
    """Move the farthest points into empty clusters, updating ``sums``/``counts``/``labels``."""
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if not empty:
        return
    # A few spare candidates cover points whose donor cluster would itself become empty.
    n_candidates = min(x.shape[0], 2 * len(empty) + int((counts > 0).sum()))
    candidates = torch.topk(best, n_candidates, largest=False).indices.tolist()
    for target in empty:
        while candidates:
            i = candidates.pop(0)
            donor = int(labels[i])
            if counts[donor] > 1:
                break
        else:  # unreachable when N >= k: some cluster always has two members
            raise RuntimeError("k-means could not re-seed an empty cluster")
        row = x[i].to(dtype)
        if update == "normalized":
            row = row * inv_norm[i]
        sums[donor] -= row
        counts[donor] -= 1
        sums[target] = row
        counts[target] = 1
        labels[i] = target
        best[i] = 1.0


def _centers_from_sums(sums: Tensor, counts: Tensor, update: str) -> Tensor:
    if update == "normalized":
        return _unit(sums)
    return sums / counts.unsqueeze(1)


def _objective(
    x: Tensor,
    inv_norm: Tensor,
    centers: Tensor,
    labels: Tensor,
    chunk_size: int,
    dtype: torch.dtype,
) -> float:
    """Mean cosine between each row and the centre it is assigned to."""
    c_hat = _unit(centers).to(dtype).T
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for s in _chunks(x.shape[0], chunk_size):
        sim = x[s : s + chunk_size].to(dtype) @ c_hat
        own = sim.gather(1, labels[s : s + chunk_size].unsqueeze(1)).squeeze(1)
        total += (own * inv_norm[s : s + chunk_size]).sum(dtype=torch.float64)
    return float(total / max(x.shape[0], 1))


def _cosine_to(
    x: Tensor, inv_norm: Tensor, points: Tensor, chunk_size: int, dtype: torch.dtype
) -> Tensor:
    """``N×m`` cosine of every row of ``x`` to each of ``m`` points (small ``m``)."""
    p_hat = _unit(points.to(dtype)).T
    out = torch.empty(x.shape[0], points.shape[0], dtype=dtype, device=x.device)
    for s in _chunks(x.shape[0], chunk_size):
        sim = x[s : s + chunk_size].to(dtype) @ p_hat
        out[s : s + chunk_size] = sim * inv_norm[s : s + chunk_size].unsqueeze(1)
    return out


def _initialise(
    x: Tensor,
    inv_norm: Tensor,
    k: int,
    init: str,
    gen: torch.Generator,
    chunk_size: int,
    dtype: torch.dtype,
) -> Tensor:
    n = x.shape[0]
    if init == "random":
        idx = torch.randperm(n, generator=gen)[:k].to(x.device)
        return x[idx].to(dtype)
    # Greedy k-means++ (as scikit-learn): draw a few candidates by D² sampling, where
    # D² = 1 − cos (half the squared distance between unit vectors), keep the best one.
    n_trials = 2 + int(math.log(k))
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    closest = _cosine_to(x, inv_norm, x[chosen], chunk_size, dtype).squeeze(1)
    for _ in range(1, k):
        weights = (1.0 - closest).clamp_min(0).double()
        weights[chosen] = 0.0
        positive = torch.nonzero(weights > 0).flatten()
        if len(positive) == 0:  # every remaining point coincides with a centre
            unused = torch.ones(n, dtype=torch.bool, device=x.device)
            unused[chosen] = False
            pool = torch.nonzero(unused).flatten().cpu()
            chosen.append(int(pool[torch.randint(len(pool), (1,), generator=gen)]))
            closest = torch.maximum(
                closest, _cosine_to(x, inv_norm, x[chosen[-1:]], chunk_size, dtype).squeeze(1)
            )
            continue
        cumulative = torch.cumsum(weights, 0)
        u = torch.rand(n_trials, generator=gen, dtype=torch.float64).to(x.device)
        # First index whose running sum exceeds u; round-off can only push past the last
        # positive weight, so clamp there.
        picks = torch.searchsorted(cumulative, u * cumulative[-1], right=True)
        picks = picks.clamp_max(int(positive[-1])).unique()
        candidate_closest = torch.maximum(
            closest.unsqueeze(1), _cosine_to(x, inv_norm, x[picks], chunk_size, dtype)
        )
        best = int((1.0 - candidate_closest).sum(dim=0).argmin())
        chosen.append(int(picks[best]))
        closest = candidate_closest[:, best]
    return x[torch.tensor(chosen, device=x.device)].to(dtype)
