"""IRN's path indices: pixel pairs within a radius, the line between them, their affinities.

A pair is a source pixel ``u`` and a destination ``v = u + d`` for a *direction* ``d = (dy, dx)``
in the half-plane ``dy > 0`` or (``dy = 0``, ``dx > 0``) with ``|d|² < r²`` (152 directions at
radius 10, 34 at radius 5); the reverse pairs follow by symmetry. The *path* of ``d`` is every
grid point ``p`` in the bounding box of ``0`` and ``d`` whose distance to the line through them
is below one pixel (both ends included). The affinity of a pair is

    a(u, u + d) = 1 − max_{p ∈ path(d)} B(u + p)

for a boundary map ``B`` in [0, 1]. Directions are ordered by path length, then in enumeration
order, as in the reference (IRN ``misc/indexing.py``), so the ``D`` axis of every output lines
up with :attr:`PathIndex.directions`.

Sources are the pixels whose every destination stays on the grid: rows ``0..h−1−f`` and
columns ``f..w−1−f`` with ``f = radius − 1`` (``h − f`` by ``w − 2f`` of them, flattened
row-major into ``Ns``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from wsss.errors import ConfigError, DataError

__all__ = ["PathIndex", "affinity_targets", "line_path", "search_directions"]

_CACHED_SIZES = 4  # gather indices kept per PathIndex (a fixed training crop hits one)


def search_directions(radius: int) -> list[tuple[int, int]]:
    """The half-plane directions ``(dy, dx)`` with ``0 < dy² + dx² < radius²``, enumerated
    as ``(0, 1..r−1)`` then row by row (``dy = 1..r−1``, ``dx = −(r−1)..r−1``)."""
    r = int(radius)
    found = [(0, dx) for dx in range(1, r)]
    found += [
        (dy, dx) for dy in range(1, r) for dx in range(-r + 1, r) if dx * dx + dy * dy < r * r
    ]
    return found


def line_path(direction: tuple[int, int]) -> np.ndarray:
    """Grid offsets ``L×2`` on the segment from ``(0, 0)`` to ``direction`` (both ends included),
    farthest first: the points of the bounding box within one pixel of the line."""
    dy, dx = direction
    length_sq = dy * dy + dx * dx
    if length_sq == 0:
        raise ValueError("a path needs a non-zero direction")
    points = []
    for y in range(min(0, dy), max(0, dy) + 1):
        for x in range(min(0, dx), max(0, dx) + 1):
            if (dy * x - dx * y) ** 2 / length_sq < 1:
                points.append((y, x))
    points.sort(key=lambda p: -abs(p[0]) - abs(p[1]))
    return np.asarray(points, dtype=np.int64)


@dataclass
class PathIndex:
    """The directions and paths of one radius, and the affinities they give.

    Args:
        radius: Pairs closer than ``radius`` (IRN: 10 for training, 5 for the random walk).

    Attributes:
        directions: ``D×2`` ``(dy, dx)``, grouped by path length (the ``D`` axis everywhere).
        paths: The path of each direction, ``L_d×2`` offsets.
        floor: ``radius − 1``, the margin of the source grid.
    """

    radius: int
    directions: np.ndarray = field(init=False)
    paths: list[np.ndarray] = field(init=False)
    floor: int = field(init=False)

    def __post_init__(self) -> None:
        if int(self.radius) != self.radius or self.radius < 2:
            raise ConfigError(f"path radius must be an integer >= 2, got {self.radius}")
        self.radius = int(self.radius)
        self.floor = self.radius - 1
        by_length: dict[int, list[tuple[tuple[int, int], np.ndarray]]] = {}
        for d in search_directions(self.radius):
            path = line_path(d)
            by_length.setdefault(len(path), []).append((d, path))
        ordered = [item for length in sorted(by_length) for item in by_length[length]]
        self.directions = np.asarray([d for d, _ in ordered], dtype=np.int64)
        self.paths = [p for _, p in ordered]
        # (first direction, offsets m×L×2) per path length, for one gather per length.
        self._groups: list[tuple[int, np.ndarray]] = []
        start = 0
        for length in sorted(by_length):
            items = by_length[length]
            self._groups.append((start, np.stack([p for _, p in items])))
            start += len(items)
        self._cache: dict[tuple, list[tuple[int, torch.Tensor]]] = {}

    @property
    def num_directions(self) -> int:
        return len(self.directions)

    def source_shape(self, height: int, width: int) -> tuple[int, int]:
        """``(h − f, w − 2f)``: the grid of source pixels of an ``h×w`` map."""
        hc, wc = height - self.floor, width - 2 * self.floor
        if hc < 1 or wc < 1:
            raise DataError(
                f"a {height}×{width} map is too small for path radius {self.radius} "
                f"(needs at least {self.floor + 1}×{2 * self.floor + 1})"
            )
        return hc, wc

    def pair_indices(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices into an ``h×w`` grid: sources ``(Ns,)`` and destinations ``D×Ns``."""
        hc, wc = self.source_shape(height, width)
        ys, xs = np.meshgrid(np.arange(hc), np.arange(wc) + self.floor, indexing="ij")
        src = (ys * width + xs).reshape(-1)
        dst = src[None, :] + (self.directions[:, 0] * width + self.directions[:, 1])[:, None]
        return src, dst

    def _gather_indices(self, height: int, width: int, device: torch.device) -> list:
        key = (height, width, str(device))
        if key in self._cache:
            self._cache[key] = self._cache.pop(key)  # most recently used last
        else:
            while len(self._cache) >= _CACHED_SIZES:  # image sizes vary: keep a few
                self._cache.pop(next(iter(self._cache)))
            src, _ = self.pair_indices(height, width)
            base = torch.as_tensor(src, device=device)
            groups = []
            for start, offsets in self._groups:
                flat = torch.as_tensor(offsets[..., 0] * width + offsets[..., 1], device=device)
                groups.append((start, flat[:, :, None] + base))  # m×L×Ns
            self._cache[key] = groups
        return self._cache[key]

    def affinity(self, boundary: torch.Tensor) -> torch.Tensor:
        """``1 − max`` boundary along each pair's path: ``B×h×w`` → ``B×D×Ns`` (differentiable).

        Raises:
            DataError: ``boundary`` is not ``B×h×w`` or too small for the radius.
        """
        if boundary.ndim != 3:
            raise DataError(f"boundary must be B×h×w, got shape {tuple(boundary.shape)}")
        b, h, w = boundary.shape
        flat = boundary.reshape(b, h * w)
        parts = []
        for _, index in self._gather_indices(h, w, boundary.device):
            values = flat[:, index.reshape(-1)].view(b, *index.shape)  # B×m×L×Ns
            parts.append(1 - values.amax(dim=2))
        return torch.cat(parts, dim=1)


def affinity_targets(
    labels: torch.Tensor, index: PathIndex, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pair labels from a label map at the boundary map's resolution (IRN's training targets).

    Args:
        labels: ``B×h×w`` segmentation ids (0 = background, ``ignore_index`` = unknown).
        index: The path index (radius 10 in IRN's training).
        ignore_index: Label of pixels that give no pair.

    Returns:
        ``bg_pos``, ``fg_pos``, ``neg``: ``B×D×Ns`` float masks of pairs with the same
        background label, the same foreground label, and different labels; a pair with an
        ignored end is in none of them.
    """
    if labels.ndim != 3:
        raise DataError(f"labels must be B×h×w, got shape {tuple(labels.shape)}")
    b, h, w = labels.shape
    src, dst = index.pair_indices(h, w)
    flat = labels.reshape(b, h * w).long()
    src_t = torch.as_tensor(src, device=labels.device)
    dst_t = torch.as_tensor(dst, device=labels.device)
    label_from = flat[:, src_t][:, None, :]  # B×1×Ns
    label_to = flat[:, dst_t.reshape(-1)].view(b, *dst_t.shape)  # B×D×Ns
    valid = (label_from != ignore_index) & (label_to != ignore_index)
    equal = label_from == label_to
    positive = equal & valid
    bg_pos = positive & (label_from == 0)
    fg_pos = positive & (label_from != 0)
    neg = ~equal & valid
    return bg_pos.float(), fg_pos.float(), neg.float()
