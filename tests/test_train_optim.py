"""Parameter groups, learning-rate schedules and the classification loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wsss.errors import ConfigError
from wsss.models import CAMClassifier
from wsss.train.losses import multilabel_soft_margin, smooth_labels
from wsss.train.optim import (
    build_optimizer,
    build_scheduler,
    cosine_factor,
    param_groups,
    poly_factor,
)


@pytest.fixture(scope="module")
def model() -> CAMClassifier:
    return CAMClassifier("resnet10t", num_classes=3)


def test_four_groups_get_lr_multipliers_and_weight_decay(model: CAMClassifier) -> None:
    groups = param_groups(model, lr=0.1, weight_decay=1e-4)
    by_name = {g["name"]: g for g in groups}
    # The head has no bias, so the fourth group is empty and left out.
    assert list(by_name) == ["pretrained_weights", "pretrained_biases", "new_weights"]
    assert by_name["pretrained_weights"]["lr"] == pytest.approx(0.1)
    assert by_name["pretrained_biases"]["lr"] == pytest.approx(0.2)
    assert by_name["new_weights"]["lr"] == pytest.approx(1.0)
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0, 1e-4]
    assert by_name["new_weights"]["params"] == [model.head.weight]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def _ids(group: dict) -> set[int]:
    return {id(p) for p in group["params"]}


def test_generic_module_groups_and_frozen_parameters() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2, bias=True), nn.LayerNorm(2)
    )
    net[2].weight.requires_grad_(False)
    groups = param_groups(net, lr=1.0, weight_decay=0.5, multipliers=(1, 3, 10, 20))
    by_name = {g["name"]: g for g in groups}
    # Norm scales γ go with the weights (the reference), shifts β with the biases.
    weights = {id(net[0].weight), id(net[1].weight), id(net[3].weight)}
    assert _ids(by_name["pretrained_weights"]) == weights
    biases = {id(net[0].bias), id(net[1].bias), id(net[2].bias), id(net[3].bias)}
    assert _ids(by_name["pretrained_biases"]) == biases
    assert (
        by_name["pretrained_biases"]["lr"] == 3
        and by_name["pretrained_biases"]["weight_decay"] == 0
    )
    old = {g["name"]: g for g in param_groups(net, 1.0, 0.5, norm_weight_group="biases")}
    assert _ids(old["pretrained_weights"]) == {id(net[0].weight)}
    assert _ids(old["pretrained_biases"]) == biases | {id(net[1].weight), id(net[3].weight)}
    with pytest.raises(ConfigError, match="4 values"):
        param_groups(net, 1.0, 0.0, multipliers=(1, 2))
    with pytest.raises(ConfigError, match="norm_weight_group"):
        param_groups(net, 1.0, 0.0, norm_weight_group="norms")


@pytest.mark.parametrize("option", [None, "weights", "biases"])
def test_bn_scale_group_and_one_sgd_step_by_hand(option: str | None) -> None:
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)).eval()  # BN on running stats
    with torch.no_grad():
        net[0].weight.fill_(2.0)
        net[0].bias.fill_(0.5)
    gamma, beta = net[1].weight, net[1].bias  # 1 and 0
    chosen = {} if option is None else {"norm_weight_group": option}
    groups = param_groups(net, lr=0.01, weight_decay=0.01, **chosen)
    option = option or "weights"  # the default follows the reference
    by_id = {id(p): g["name"] for g in groups for p in g["params"]}
    expected = "pretrained_weights" if option == "weights" else "pretrained_biases"
    assert by_id[id(gamma)] == expected and by_id[id(beta)] == "pretrained_biases"
    opt = build_optimizer(groups, "sgd")
    # y = γ·(2·1 + 0.5)/√(1 + 1e-5) + β at 4 pixels; the loss Σy gives ∂/∂γ = 10/√(1 + 1e-5)
    net(torch.ones(1, 1, 2, 2)).sum().backward()
    grad = 10 / math.sqrt(1 + 1e-5)
    opt.step()
    if option == "weights":  # lr 0.01 with weight decay 0.01: γ ← 1 − 0.01·(g + 0.01·1)
        assert gamma.item() == pytest.approx(1 - 0.01 * (grad + 0.01), abs=1e-6)  # 0.8999
    else:  # 2·lr, no weight decay: γ ← 1 − 0.02·g
        assert gamma.item() == pytest.approx(1 - 0.02 * grad, abs=1e-6)  # 0.8000
    assert beta.item() == pytest.approx(-0.02 * 4, abs=1e-6)  # ∂/∂β = 4, 2·lr, no decay


def _lrs(opt: torch.optim.Optimizer) -> list[float]:
    return [g["lr"] for g in opt.param_groups]


def test_poly_schedule_values(model: CAMClassifier) -> None:
    total = 10
    opt = build_optimizer(param_groups(model, 0.1, 1e-4), "sgd")
    sched = build_scheduler(opt, "poly", total, poly_power=0.9)
    base = [0.1, 0.2, 1.0]
    assert _lrs(opt) == pytest.approx(base)  # k = 0
    for _ in range(total // 2):
        opt.step()
        sched.step()
    assert _lrs(opt) == pytest.approx([b * 0.5**0.9 for b in base])  # k = K/2
    for _ in range(total // 2):
        opt.step()
        sched.step()
    assert _lrs(opt) == pytest.approx([0.0, 0.0, 0.0])  # k = K
    assert poly_factor(3, 4, 2.0) == pytest.approx(0.0625)
    assert poly_factor(9, 4) == 0.0


def test_onecycle_peaks_at_each_group_lr(model: CAMClassifier) -> None:
    opt = build_optimizer(param_groups(model, 0.01, 0.0), "adamw")
    assert isinstance(opt, torch.optim.AdamW)
    sched = build_scheduler(opt, "onecycle", 40, onecycle_pct=0.25)
    start = _lrs(opt)
    peak = [0.0] * len(start)
    for _ in range(40):
        opt.step()
        sched.step()
        peak = [max(a, b) for a, b in zip(peak, _lrs(opt), strict=True)]
    assert peak == pytest.approx([0.01, 0.02, 0.1], rel=5e-3)  # peak between two steps
    assert all(s < p / 10 for s, p in zip(start, peak, strict=True))
    assert all(lr < p / 1000 for lr, p in zip(_lrs(opt), peak, strict=True))


def test_bad_optimiser_or_schedule(model: CAMClassifier) -> None:
    groups = param_groups(model, 0.1, 0.0)
    with pytest.raises(ConfigError, match=r"train\.optimizer"):
        build_optimizer(groups, "lamb")
    opt = build_optimizer(groups, "sgd", momentum=0.9)
    assert opt.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ConfigError, match=r"train\.schedule"):
        build_scheduler(opt, "exponential", 10)
    with pytest.raises(ConfigError, match="no optimiser steps"):
        build_scheduler(opt, "poly", 0)


def _scalar_steps(opt_kwargs: dict, grads: list[float]) -> list[float]:
    """The values of one scalar parameter (start 1.0, lr 0.1) after each gradient."""
    p = nn.Parameter(torch.tensor([1.0]))
    opt = build_optimizer([{"params": [p], "lr": 0.1, "weight_decay": 0.0}], "sgd", **opt_kwargs)
    values = []
    for g in grads:
        p.grad = torch.tensor([g])
        opt.step()
        values.append(p.item())
    return values


def test_nesterov_momentum_by_hand() -> None:
    # b_t = μ·b_{t−1} + g_t; Nesterov steps by lr·(g_t + μ·b_t), plain momentum by lr·b_t.
    # μ = 0.9, g = 1 then 2: b = 1, 2.9. Nesterov: 1 − 0.1·1.9 = 0.81; 0.81 − 0.1·4.61 = 0.349.
    assert _scalar_steps({"momentum": 0.9, "nesterov": True}, [1.0, 2.0]) == pytest.approx(
        [0.81, 0.349]
    )
    assert _scalar_steps({"momentum": 0.9}, [1.0, 2.0]) == pytest.approx([0.9, 0.61])
    groups = [{"params": [nn.Parameter(torch.zeros(1))], "lr": 0.1}]
    with pytest.raises(ConfigError, match=r"train\.nesterov=true needs .*momentum > 0"):
        build_optimizer(groups, "sgd", momentum=0.0, nesterov=True)
    with pytest.raises(ConfigError, match=r"train\.nesterov"):
        build_optimizer(groups, "adamw", nesterov=True)


def test_cosine_schedule_with_and_without_warmup() -> None:
    assert [cosine_factor(k, 10) for k in (0, 5, 10, 12)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    # W = 2 warmup steps: 0, 1/2, then the cosine over the remaining 8 steps.
    assert [cosine_factor(k, 10, 2) for k in (0, 1, 2, 6, 10)] == pytest.approx(
        [0.0, 0.5, 1.0, 0.5, 0.0]
    )
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 0.2}, {"params": [], "lr": 2.0}], lr=0.2)
    sched = build_scheduler(opt, "cosine", 4, warmup_steps=1)
    used = []
    for _ in range(4):
        used.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    half = 0.5 * (1 + math.cos(math.pi / 3))  # k = 2 of the 3 cosine steps after warmup
    assert [u[0] for u in used] == pytest.approx([0.0, 0.2, 0.2 * half, 0.2 * (1 - half)])
    assert [u[1] for u in used] == pytest.approx([10 * u[0] for u in used])  # per-group peak


def test_bad_warmup_is_a_config_error(model: CAMClassifier) -> None:
    opt = build_optimizer(param_groups(model, 0.1, 0.0), "sgd")
    with pytest.raises(ConfigError, match=r"warmup_steps=2 applies to train\.schedule=cosine"):
        build_scheduler(opt, "poly", 10, warmup_steps=2)
    with pytest.raises(ConfigError, match=r"train\.warmup_steps must be in \[0, 10\)"):
        build_scheduler(opt, "cosine", 10, warmup_steps=10)


def test_label_smoothing_loss_against_hand_computation() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    eps = 0.1
    assert torch.equal(smooth_labels(labels, eps), torch.tensor([[0.95, 0.05], [0.05, 0.95]]))

    def bce(z: float, t: float) -> float:
        s = 1 / (1 + math.exp(-z))
        return -(t * math.log(s) + (1 - t) * math.log(1 - s))

    per_image = [
        (bce(2.0, 0.95) + bce(-1.0, 0.05)) / 2,
        (bce(0.0, 0.05) + bce(3.0, 0.95)) / 2,
    ]
    expected = sum(per_image) / 2
    assert multilabel_soft_margin(logits, labels, eps).item() == pytest.approx(expected, rel=1e-6)
    plain = (bce(2.0, 1) + bce(-1.0, 0) + bce(0.0, 0) + bce(3.0, 1)) / 4
    assert multilabel_soft_margin(logits, labels).item() == pytest.approx(plain, rel=1e-6)
    assert torch.equal(labels, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # not modified


def test_bias_weight_decay_reaches_the_bias_groups():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    plain = {g["name"]: g["weight_decay"] for g in param_groups(model, 0.1, 1e-4)}
    decayed = {
        g["name"]: g["weight_decay"] for g in param_groups(model, 0.1, 1e-4, decay_biases=True)
    }
    assert plain == {"pretrained_weights": 1e-4, "pretrained_biases": 0.0}
    assert decayed == {"pretrained_weights": 1e-4, "pretrained_biases": 1e-4}
