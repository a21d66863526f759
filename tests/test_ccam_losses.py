"""C²AM losses on tiny batches with values computed by hand: clamping, rank weights, the three
contrastive terms, fp32 under autocast, the C²AM-H hint loss (empty case included), and the
cross-process gather against the single-process loss."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from wsss.io.maps import ClassMaps
from wsss.train.ccam_losses import (
    ccam_loss,
    clamped_cosine,
    hint_loss,
    hint_prior,
    rank_weights,
)

pytestmark = pytest.mark.usefixtures("one_thread")

R2 = 1 / math.sqrt(2)
A = 0.25


def nlog(x: float) -> float:
    return -math.log(x)


def test_clamped_cosine_clamps_both_ends() -> None:
    a = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 3.0], [5.0, 0.0], [-1.0, 0.0]])
    expected = torch.tensor([[5e-4, 0.9995, 5e-4], [R2, R2, 5e-4]])
    torch.testing.assert_close(clamped_cosine(a, b), expected)


def test_rank_weights_by_hand() -> None:
    sim = torch.tensor([[0.2, 0.9995, 0.7], [0.9995, 0.1, 0.3]])
    # row 0: ranks [2, 0, 1]; row 1: ranks [0, 2, 1]; w = exp(−α(rank − 1))
    expected = torch.tensor([[math.exp(-A), math.exp(A), 1.0], [math.exp(A), math.exp(-A), 1.0]])
    torch.testing.assert_close(rank_weights(sim, A), expected)


def test_rank_weights_follow_a_column_permutation() -> None:
    sim = torch.rand(4, 6, generator=torch.Generator().manual_seed(1))
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(rank_weights(sim[:, perm], 0.05), rank_weights(sim, 0.05)[:, perm])


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    fg = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    bg = torch.tensor([[2.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    return fg, bg


def test_ccam_loss_by_hand() -> None:
    fg, bg = _batch()
    loss = ccam_loss(fg, bg, alpha=A)
    ea, e_a = math.exp(A), math.exp(-A)
    # S^f: diagonal 0.9995 (rank 0), f1·f2 = f2·f3 = 1/√2, f1·f3 = 0 → clamped 5e-4.
    # rows ranked: [0.9995, R2, 5e-4], [R2, 0.9995, R2] (tie: column order), [5e-4, R2, 0.9995]
    pos_fg = (
        3 * ea * nlog(0.9995)
        + 3 * 1.0 * nlog(R2)  # rank 1 in every row
        + e_a * (nlog(5e-4) + nlog(R2) + nlog(5e-4))  # rank 2
    ) / 9
    # S^b: all bg vectors parallel → every entry 0.9995; ranks 0, 1, 2 along each row.
    pos_bg = 3 * (ea + 1 + e_a) * nlog(0.9995) / 9
    # S^n_ij = s(b_i, f_j) = [0.9995, R2, 5e-4] in every row.
    neg = (nlog(1 - 0.9995) + nlog(1 - R2) + nlog(1 - 5e-4)) / 3
    assert loss.positive_fg.item() == pytest.approx(pos_fg, rel=1e-4)
    assert loss.positive_bg.item() == pytest.approx(pos_bg, rel=1e-4)
    assert loss.negative.item() == pytest.approx(neg, rel=1e-4)
    assert loss.total.item() == pytest.approx(pos_fg + pos_bg + neg, rel=1e-4)


def test_ccam_loss_alpha_changes_only_positive_terms() -> None:
    fg, bg = _batch()
    wsss, wsol = ccam_loss(fg, bg, alpha=0.25), ccam_loss(fg, bg, alpha=0.05)
    assert wsss.negative.item() == pytest.approx(wsol.negative.item())
    assert wsss.positive_fg.item() != pytest.approx(wsol.positive_fg.item())


def test_ccam_loss_is_fp32_under_autocast() -> None:
    fg, bg = (t.to(torch.bfloat16) for t in _batch())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ccam_loss(fg, bg)
    reference = ccam_loss(fg.float(), bg.float())
    assert loss.total.dtype == torch.float32
    torch.testing.assert_close(loss.total, reference.total)


def test_ccam_loss_gradient_is_finite_and_zero_through_clamped_pairs() -> None:
    fg, bg = _batch()
    fg.requires_grad_(True)
    ccam_loss(fg, bg).total.backward()
    assert torch.isfinite(fg.grad).all() and fg.grad.abs().sum() > 0
    # Every pair clamped (fg all parallel, bg all parallel and orthogonal to them): the
    # clamp cuts the gradient, as in the reference (no soft clamp, no epsilon).
    fg = torch.tensor([[1.0, 0.0], [2.0, 0.0]], requires_grad=True)
    bg = torch.tensor([[0.0, 1.0], [0.0, 3.0]], requires_grad=True)
    ccam_loss(fg, bg).total.backward()
    assert torch.equal(fg.grad, torch.zeros_like(fg))
    assert torch.equal(bg.grad, torch.zeros_like(bg))


def bce(x: float, t: float) -> float:
    s = 1 / (1 + math.exp(-x))
    return -(t * math.log(s) + (1 - t) * math.log(1 - s))


def test_hint_loss_by_hand_with_and_without_background_hints() -> None:
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 5.0]]]])
    prior = torch.tensor([[[0.5, 0.1], [0.4, 0.39]]])
    expected = (bce(2.0, 0.95) + bce(0.0, 0.95)) / 2  # 0.5 and 0.4 (≥ δ_fg) are hints
    assert hint_loss(logits, prior).item() == pytest.approx(expected, rel=1e-6)
    with_bg = (bce(2.0, 0.95) + bce(0.0, 0.95) + bce(-1.0, 0.05)) / 3  # 0.1 < δ_bg = 0.2
    assert hint_loss(logits, prior, bg_threshold=0.2).item() == pytest.approx(with_bg, rel=1e-6)
    no_smoothing = (bce(2.0, 1.0) + bce(0.0, 1.0)) / 2
    assert hint_loss(logits, prior, smoothing=0.0).item() == pytest.approx(no_smoothing, rel=1e-6)


def test_hint_loss_averages_over_the_hint_pixels_of_the_batch() -> None:
    logits = torch.tensor([[[[1.0, 1.0]]], [[[3.0, -2.0]]]])
    prior = torch.tensor([[[0.0, 0.0]], [[0.9, 0.8]]])  # first image has no hint
    expected = (bce(3.0, 0.95) + bce(-2.0, 0.95)) / 2
    assert hint_loss(logits, prior).item() == pytest.approx(expected, rel=1e-6)


def test_hint_loss_without_hints_is_exactly_zero_and_backpropagates() -> None:
    logits = torch.randn(2, 1, 3, 3, requires_grad=True)
    loss = hint_loss(logits, torch.full((2, 6, 6), 0.39))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_hint_loss_resizes_the_prior_to_the_logit_grid() -> None:
    prior = torch.zeros(1, 4, 4)
    prior[0, 0, 2] = 1.0  # nearest 4→2 samples rows/cols 0 and 2: lands on logit (0, 1)
    prior[0, 1, 1] = 1.0  # never sampled by nearest
    logits = torch.tensor([[[[0.0, 3.0], [-3.0, 1.0]]]])
    assert hint_loss(logits, prior, mode="nearest").item() == pytest.approx(bce(3.0, 0.95))
    # bicubic keeps a constant prior constant: every logit is a hint
    full = hint_loss(logits, torch.full((1, 4, 4), 0.5))
    expected = sum(bce(v, 0.95) for v in (0.0, 3.0, -3.0, 1.0)) / 4
    assert full.item() == pytest.approx(expected, rel=1e-5)


def test_hint_loss_is_fp32_under_autocast_and_checks_inputs() -> None:
    logits = torch.tensor([[[[2.0, -1.0]]]], dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = hint_loss(logits, torch.tensor([[[0.5, 0.5]]]))
    assert loss.dtype == torch.float32
    with pytest.raises(ValueError, match="B×1×h×w"):
        hint_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="mode"):
        hint_loss(logits, torch.zeros(1, 1, 2), mode="area")
    with pytest.raises(ValueError, match="bg_threshold"):
        hint_loss(logits, torch.zeros(1, 1, 2), bg_threshold=0.5)


def test_hint_prior_is_the_max_over_classes() -> None:
    hr = np.array([[[0.1, 0.8]], [[0.5, 0.2]]], dtype=np.float32)
    maps = ClassMaps(keys=[3, 7], cam=hr, hr=hr)
    np.testing.assert_array_equal(hint_prior(maps), np.float32([[0.5, 0.8]]))
    empty = ClassMaps(keys=[], cam=np.zeros((0, 1, 1)), hr=np.zeros((0, 2, 3)))
    np.testing.assert_array_equal(hint_prior(empty), np.zeros((2, 3)))


# --- gather across processes --------------------------------------------------------------


def _features(n: int = 6, d: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def _gather_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    fg, bg = _features()
    n = fg.shape[0] // world
    fg = fg[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    bg = bg[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    loss = ccam_loss(fg, bg, alpha=0.25, gather=True).total
    loss.backward()
    torch.save({"loss": loss.detach(), "fg": fg.grad, "bg": bg.grad}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_gather_across_two_processes_equals_the_single_process_batch(tmp_path: Path) -> None:
    world = 2
    mp.spawn(_gather_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    fg, bg = _features()
    fg.requires_grad_(True)
    bg.requires_grad_(True)
    full = ccam_loss(fg, bg, alpha=0.25).total
    full.backward()
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    # DDP averages the ranks: the mean of the local losses and of the local gradients.
    torch.testing.assert_close(torch.stack([p["loss"] for p in parts]).mean(), full.detach())
    n = fg.shape[0] // world
    for r, p in enumerate(parts):
        rows = slice(r * n, (r + 1) * n)
        torch.testing.assert_close(p["fg"] / world, fg.grad[rows])
        torch.testing.assert_close(p["bg"] / world, bg.grad[rows])
    # Without gather the local losses are a different objective (fewer pairs).
    local = ccam_loss(fg[:n].detach(), bg[:n].detach()).total
    assert local.item() != pytest.approx(parts[0]["loss"].item())
