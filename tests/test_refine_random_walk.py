"""Random walk: the sparse products equal the dense reference formulation, and the wrapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss.errors import DataError
from wsss.io.maps import ClassMaps
from wsss.refine.random_walk import (
    propagate,
    propagate_dense,
    random_walk,
    random_walk_maps,
    transition_weights,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _dense_by_loops(seeds, boundary, radius, beta, exp_times):
    """The reference's x · T^(2^k), built pair by pair with numpy (float64)."""
    k, h, w = seeds.shape
    n = h * w
    a = np.eye(n)
    for y in range(h):
        for x in range(w):
            for dy in range(-radius + 1, radius):
                for dx in range(-radius + 1, radius):
                    if not 0 < dy * dy + dx * dx < radius * radius:
                        continue
                    v, u = y + dy, x + dx
                    if not (0 <= v < h and 0 <= u < w):
                        continue
                    line = [
                        boundary[y + py, x + px]
                        for py in range(min(0, dy), max(0, dy) + 1)
                        for px in range(min(0, dx), max(0, dx) + 1)
                        if (dy * px - dx * py) ** 2 < dy * dy + dx * dx
                    ]
                    a[y * w + x, v * w + u] = 1 - max(line)
    t = a**beta
    t = t / t.sum(axis=0, keepdims=True)
    for _ in range(exp_times):
        t = t @ t
    return (seeds.reshape(k, n) @ t).reshape(k, h, w)


@pytest.mark.parametrize(("h", "w", "radius"), [(7, 9, 5), (20, 16, 5), (10, 6, 3), (5, 5, 5)])
def test_sparse_walk_equals_the_dense_formulation(h, w, radius):
    rng = np.random.default_rng(h * w)
    boundary = rng.random((h, w)) ** 3  # mostly low, some high: a realistic spread
    seeds = rng.random((3, h, w))
    expected = _dense_by_loops(seeds, boundary, radius, 10.0, 8)
    b, x = torch.from_numpy(boundary), torch.from_numpy(seeds)
    sparse = propagate(x, b, radius=radius).numpy()
    dense = propagate_dense(x, b, radius=radius).numpy()
    np.testing.assert_allclose(sparse, expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(dense, expected, rtol=0, atol=1e-10)
    # float32, normalised by the maximum as the pipeline does: well within 1e-4.
    s32 = propagate(x.float(), b.float(), radius=radius).numpy()
    assert np.abs(s32 / s32.max() - expected / expected.max()).max() < 1e-4
    # The walk moved mass: the result is not the seeds.
    assert np.abs(expected - seeds).max() > 1e-2


def test_transition_columns_sum_to_one_and_reach_only_the_grid():
    b = torch.rand(6, 8, dtype=torch.float64)
    offsets, weights = transition_weights(b, radius=5, beta=10.0)
    assert offsets.shape == (69, 2) and weights.shape == (69, 6, 8)
    torch.testing.assert_close(weights.sum(0), torch.ones(6, 8, dtype=torch.float64))
    ys, xs = torch.meshgrid(torch.arange(6), torch.arange(8), indexing="ij")
    for o, (dy, dx) in enumerate(offsets):
        off = (ys + dy < 0) | (ys + dy >= 6) | (xs + dx < 0) | (xs + dx >= 8)
        assert (weights[o][off] == 0).all()


def test_a_boundary_wall_stops_the_walk():
    h, w = 9, 12
    b = torch.zeros(h, w)
    b[:, 6] = 1.0
    seeds = torch.zeros(1, h, w)
    seeds[0, 4, 2] = 1.0
    out = propagate(seeds, b)
    assert (out[0, :, 6:] == 0).all()  # every pair across the wall has affinity 0
    assert (out[0, :, :6] > 0).all()  # the left side is connected


def test_random_walk_upsamples_crops_and_normalises():
    rng = np.random.default_rng(0)
    height, width = 21, 30  # stride-4 grid 6×8
    cams = rng.random((2, 6, 8)).astype(np.float32)
    boundary = (rng.random((6, 8)) ** 2).astype(np.float32)
    rw, up = random_walk(cams, boundary, (height, width))
    assert rw.shape == (2, 6, 8) and up.shape == (2, height, width)
    walked = propagate(torch.from_numpy(cams * (1 - boundary)), torch.from_numpy(boundary))
    expected = F.interpolate(walked[None], size=(24, 32), mode="bilinear", align_corners=False)
    expected = expected[0, :, :height, :width]
    torch.testing.assert_close(up, expected / expected.max())
    torch.testing.assert_close(rw, walked / walked.max())
    assert up.max() == 1.0
    # Without seed suppression the result differs.
    _, raw = random_walk(cams, boundary, (height, width), suppress_seeds=False)
    assert (raw - up).abs().max() > 1e-3


def test_empty_walk_stays_zero_and_sizes_are_checked():
    rw, up = random_walk(np.zeros((1, 3, 4)), np.zeros((3, 4)), (12, 16))
    assert (up == 0).all() and (rw == 0).all() and not torch.isnan(up).any()
    with pytest.raises(DataError, match="do not belong"):
        random_walk(np.zeros((1, 3, 4)), np.zeros((3, 4)), (20, 16))
    with pytest.raises(DataError, match="K×h×w"):
        random_walk(np.zeros((1, 3, 5)), np.zeros((3, 4)), (12, 16))


def test_random_walk_maps_keeps_keys_and_the_map_format():
    rng = np.random.default_rng(1)
    maps = ClassMaps(
        keys=[3, 7],
        cam=rng.random((2, 4, 5)).astype(np.float32),
        hr=rng.random((2, 15, 18)).astype(np.float32),
    )
    out = random_walk_maps(maps, rng.random((4, 5)) * 0.5)
    assert out.keys.tolist() == [3, 7]
    assert out.cam.shape == (2, 4, 5) and out.hr.shape == (2, 15, 18)
    assert out.hr.min() >= 0 and out.hr.max() == pytest.approx(1.0)
    assert out.cam.min() >= 0 and out.cam.max() == pytest.approx(1.0)
