"""Path indices: direction counts, line paths, affinities and targets against brute-force loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.errors import ConfigError, DataError
from wsss.refine.paths import PathIndex, affinity_targets, line_path, search_directions

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("radius", "count"), [(10, 152), (5, 34)])
def test_direction_counts_of_irn(radius, count):
    assert len(search_directions(radius)) == count
    index = PathIndex(radius)
    assert index.num_directions == count
    # The same set, reordered by path length (non-decreasing).
    assert {tuple(d) for d in index.directions} == set(search_directions(radius))
    lengths = [len(p) for p in index.paths]
    assert lengths == sorted(lengths)


def test_half_plane_within_radius():
    dirs = np.asarray(search_directions(5))
    assert ((dirs[:, 0] > 0) | ((dirs[:, 0] == 0) & (dirs[:, 1] > 0))).all()
    assert (dirs[:, 0] ** 2 + dirs[:, 1] ** 2 < 25).all()
    assert (4, 3) not in set(map(tuple, dirs))  # 16 + 9 = 25 is not below 25
    assert (4, 2) in set(map(tuple, dirs))


def test_line_paths_by_hand():
    assert sorted(map(tuple, line_path((0, 3)))) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    # Diagonal: all four points of the 2×2 box lie within one pixel of the line.
    assert sorted(map(tuple, line_path((1, 1)))) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # (1, 3): distance² of (y, x) to the line is (x − 3y)²/10; (1, 0) gives 9/10 < 1, (0, 3) 9/10.
    assert sorted(map(tuple, line_path((1, 3)))) == [
        (0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)
    ]  # fmt: skip
    # (2, 3): (2x − 3y)²/13 < 1 drops (0, 2), (0, 3), (2, 0), (2, 1) of the 3×4 box.
    assert sorted(map(tuple, line_path((2, 3)))) == [
        (0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3), (2, 2), (2, 3)
    ]  # fmt: skip
    assert tuple(line_path((2, -3))[0]) == (2, -3)  # farthest first: the destination


def _brute_force_affinity(boundary: np.ndarray, radius: int) -> dict:
    """a(u, u + d) for every source u of the cropped grid and direction d, by plain loops."""
    h, w = boundary.shape
    f = radius - 1
    out = {}
    for dy, dx in search_directions(radius):
        for y in range(h - f):
            for x in range(f, w - f):
                points = []
                for py in range(min(0, dy), max(0, dy) + 1):
                    for px in range(min(0, dx), max(0, dx) + 1):
                        if (dy * px - dx * py) ** 2 < dy * dy + dx * dx:
                            points.append(boundary[y + py, x + px])
                out[(dy, dx, y, x)] = 1 - max(points)
    return out


@pytest.mark.parametrize("radius", [3, 5])
def test_vectorised_affinity_equals_the_loop(radius):
    rng = np.random.default_rng(radius)
    boundary = rng.random((2, 11, 14)).astype(np.float32)
    index = PathIndex(radius)
    aff = index.affinity(torch.from_numpy(boundary)).numpy()
    hc, wc = index.source_shape(11, 14)
    assert aff.shape == (2, index.num_directions, hc * wc)
    for b in range(2):
        expected = _brute_force_affinity(boundary[b], radius)
        got = aff[b].reshape(index.num_directions, hc, wc)
        for i, (dy, dx) in enumerate(index.directions):
            for y in range(hc):
                for x in range(wc):
                    want = expected[(dy, dx, y, x + radius - 1)]
                    assert got[i, y, x] == pytest.approx(want, abs=1e-7)


def test_affinity_is_differentiable_and_needs_a_big_enough_map():
    index = PathIndex(5)
    b = torch.rand(1, 9, 12, requires_grad=True)
    index.affinity(b).sum().backward()
    assert b.grad is not None and b.grad.abs().sum() > 0
    with pytest.raises(DataError, match="too small"):
        index.affinity(torch.rand(1, 4, 20))
    with pytest.raises(DataError, match="B×h×w"):
        index.affinity(torch.rand(9, 12))
    with pytest.raises(ConfigError):
        PathIndex(1)


def test_pair_indices_point_at_source_plus_direction():
    index = PathIndex(4)
    h, w = 8, 10
    src, dst = index.pair_indices(h, w)
    ys, xs = np.divmod(src, w)
    assert ys.min() == 0 and ys.max() == h - 4 and xs.min() == 3 and xs.max() == w - 4
    for i, (dy, dx) in enumerate(index.directions):
        np.testing.assert_array_equal(dst[i], (ys + dy) * w + xs + dx)


def test_affinity_targets_by_hand():
    index = PathIndex(2)  # directions (0, 1), (1, -1), (1, 0), (1, 1)
    assert {tuple(d) for d in index.directions} == {(0, 1), (1, -1), (1, 0), (1, 1)}
    labels = torch.tensor([[[0, 0, 1], [0, 255, 1]]])  # sources: row 0, column 1 only
    bg_pos, fg_pos, neg = affinity_targets(labels, index)
    assert bg_pos.shape == (1, 4, 1)
    got = {
        tuple(d): (bg_pos[0, i, 0].item(), fg_pos[0, i, 0].item(), neg[0, i, 0].item())
        for i, d in enumerate(index.directions)
    }
    # Source (0, 1) has label 0.
    assert got[(0, 1)] == (0, 0, 1)  # → (0, 2) label 1: different
    assert got[(1, -1)] == (1, 0, 0)  # → (1, 0) label 0: same background
    assert got[(1, 0)] == (0, 0, 0)  # → (1, 1) ignored
    assert got[(1, 1)] == (0, 0, 1)  # → (1, 2) label 1
    labels = torch.tensor([[[2, 2, 2], [2, 2, 0]]])
    bg_pos, fg_pos, neg = affinity_targets(labels, index)
    assert fg_pos[0, :, 0].tolist() == [
        1.0 if tuple(d) != (1, 1) else 0.0 for d in index.directions
    ]
    assert bg_pos.sum() == 0 and neg.sum() == 1


def test_index_cache_stays_bounded_over_many_image_sizes():
    index = PathIndex(3)
    first = index.affinity(torch.rand(1, 6, 7))
    for size in range(8, 16):
        index.affinity(torch.rand(1, size, size + 1))
    assert len(index._cache) <= 4
    torch.testing.assert_close(index.affinity(torch.ones(1, 6, 7)), torch.zeros_like(first))
