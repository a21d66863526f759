"""The boundary network (IRN's edge branch) and the affinity loss."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from wsss.models import create_model, list_models, load_model, save_model
from wsss.models.boundary import BoundaryNet, affinity_loss
from wsss.refine.paths import PathIndex, affinity_targets

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net() -> BoundaryNet:
    torch.manual_seed(0)
    return create_model("boundary_net", backbone="resnet10t")


def test_registered_and_shaped_like_irn(net):
    assert "boundary_net" in list_models()
    # Five branches of 1×1 conv → 32 + GroupNorm(4) (+ upsampling) + ReLU, then 160 → 1.
    ups = []
    for branch in net.branches:
        assert isinstance(branch[0], nn.Conv2d) and branch[0].out_channels == 32
        assert branch[0].bias is None and branch[0].kernel_size == (1, 1)
        assert isinstance(branch[1], nn.GroupNorm) and branch[1].num_groups == 4
        assert isinstance(branch[-1], nn.ReLU)
        ups.append(branch[2].scale_factor if isinstance(branch[2], nn.Upsample) else 1)
    assert ups == [1, 1, 2, 4, 4]
    assert net.head.in_channels == 160 and net.head.out_channels == 1 and net.head.bias is not None


@pytest.mark.parametrize(("h", "w"), [(64, 64), (61, 78), (33, 47)])
def test_logits_at_stride_four(net, h, w):
    out = net(torch.randn(2, 3, h, w))
    assert out.shape == (2, 1, -(-h // 4), -(-w // 4))


def test_backbone_is_frozen_and_undilated(net):
    net.train()
    assert not net.backbone.training and net.branches.training
    assert all(not p.requires_grad for p in net.backbone.parameters())
    convs = [m for m in net.backbone.layer4.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.dilation == (1, 1) for c in convs)
    dilated = BoundaryNet("resnet10t", dilated=True)
    assert any(
        m.dilation == (2, 2) for m in dilated.backbone.layer4.modules() if hasattr(m, "dilation")
    )
    loss = net(torch.randn(2, 3, 32, 32)).sum()
    loss.backward()
    assert all(p.grad is not None for p in net.trainable_parameters())
    assert all(p.grad is None for p in net.backbone.parameters())
    net.zero_grad(set_to_none=True)
    net.eval()


def test_boundary_averages_the_flip_and_crops(net):
    x = torch.randn(3, 30, 41)
    got = net.boundary(x, pad_to=64)
    padded = torch.nn.functional.pad(x[None], (0, 64 - 41, 0, 64 - 30))
    logits = net(torch.cat([padded, padded.flip(-1)]))[:, 0]
    expected = torch.sigmoid(logits[0] / 2 + logits[1].flip(-1) / 2)[:8, :11]
    torch.testing.assert_close(got, expected)
    assert net.boundary(x, pad_to=None).shape == (8, 11)
    assert ((got >= 0) & (got <= 1)).all()


def test_checkpoint_round_trip(net, tmp_path):
    path = save_model(tmp_path / "boundary", net, {"classes": None, "step": 3})
    loaded, meta = load_model(path)
    assert isinstance(loaded, BoundaryNet)
    assert meta["architecture"] == {
        "type": "boundary_net",
        "backbone": "resnet10t",
        "dilated": False,
    }
    x = torch.randn(1, 3, 40, 40)
    torch.testing.assert_close(loaded(x), net.eval()(x))


def test_affinity_loss_by_hand():
    aff = torch.tensor([0.5, 0.9, 0.2, 0.7, 0.4])
    bg = torch.tensor([1.0, 0, 0, 0, 0])
    fg = torch.tensor([0, 1.0, 0, 0, 0])
    neg = torch.tensor([0, 0, 1.0, 1.0, 0])
    eps = 1e-5
    l_bg = -math.log(0.5 + eps) / (1 + eps)
    l_fg = -math.log(0.9 + eps) / (1 + eps)
    l_neg = (-math.log(1 + eps - 0.2) - math.log(1 + eps - 0.7)) / (2 + eps)
    loss, parts = affinity_loss(aff, bg, fg, neg)
    assert loss.item() == pytest.approx(((l_bg + l_fg) / 2 + l_neg) / 2, rel=1e-6)
    assert parts["neg"].item() == pytest.approx(l_neg, rel=1e-6)
    # No foreground pair: that term is 0, not NaN.
    loss, parts = affinity_loss(aff, bg, torch.zeros(5), neg)
    assert parts["fg_pos"].item() == 0.0
    assert loss.item() == pytest.approx((l_bg / 2 + l_neg) / 2, rel=1e-6)


def test_loss_trains_the_branch_towards_the_labels(net):
    # Pair targets from a label map with a vertical class edge; a few steps lower the loss.
    torch.manual_seed(1)
    model = BoundaryNet("resnet10t")
    index = PathIndex(3)
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, :, 8:] = 1
    x = torch.randn(1, 3, 64, 64)
    targets = affinity_targets(labels, index)
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.03)
    losses = []
    for _ in range(8):
        aff = index.affinity(torch.sigmoid(model(x))[:, 0])
        loss, _ = affinity_loss(aff, *targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.02
    assert all(b < a for a, b in itertools.pairwise(losses))
