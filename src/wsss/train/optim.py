"""Optimisers over the four parameter groups and their learning-rate schedules (METHODS.md §1).

Groups (P-NOC and Puzzle-CAM code): pretrained weights and norm scales γ (lr, wd); pretrained
biases and norm shifts β (2·lr, wd 0); new weights, i.e. the class head (10·lr, wd); new biases
(20·lr, wd 0). ``norm_weight_group="biases"`` (setting ``train.norm_weight_group``) moves γ to
the bias group instead (2·lr, wd 0), as ``wsss`` did before following the reference.
Schedules advance once per optimiser step: ``poly`` is ``lr·(1 − k/K)^power``; ``onecycle`` is
torch's :class:`~torch.optim.lr_scheduler.OneCycleLR` peaking at each group's lr; ``cosine`` is
``lr·½(1 + cos(π·(k − W)/(K − W)))`` after ``W`` steps of linear warmup ``lr·k/W`` (``W = 0``
by default; the warmup of the common "cosine with warmup" schedule).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from wsss.errors import ConfigError
from wsss.models.classifier import split_parameters

__all__ = [
    "GROUP_NAMES",
    "build_optimizer",
    "build_scheduler",
    "cosine_factor",
    "param_groups",
    "poly_factor",
]

GROUP_NAMES = ("pretrained_weights", "pretrained_biases", "new_weights", "new_biases")
_DECAYED = {
    "pretrained_weights": True,
    "pretrained_biases": False,
    "new_weights": True,
    "new_biases": False,
}


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    multipliers: Sequence[float] = (1.0, 2.0, 10.0, 20.0),
    norm_weight_group: Literal["weights", "biases"] = "weights",
    decay_biases: bool = False,
) -> list[dict]:
    """Optimiser parameter groups with the lr multipliers and weight-decay rule above.

    Uses ``model.param_groups(norm_weight_group=...)`` (a dict of the four named lists) when
    the model defines it; otherwise every parameter is "pretrained" and split by
    :func:`~wsss.models.classifier.split_parameters`. Frozen parameters and empty groups are
    left out; each group keeps its ``name``.

    Args:
        model: The module to optimise.
        lr: Base learning rate.
        weight_decay: Weight decay of the two weight groups.
        multipliers: lr factors of the four groups, in :data:`GROUP_NAMES` order.
        norm_weight_group: Where norm scales γ go: ``weights`` (the reference code: lr, wd)
            or ``biases`` (2·lr, no weight decay).
        decay_biases: Also apply ``weight_decay`` to the two bias groups (IRN's boundary
            network decays every parameter; the CAM code decays weights only).
    """
    if len(multipliers) != 4:
        raise ConfigError(f"train.lr_multipliers needs 4 values, got {list(multipliers)}")
    if norm_weight_group not in ("weights", "biases"):
        raise ConfigError(
            f"train.norm_weight_group must be 'weights' or 'biases', got {norm_weight_group!r}"
        )
    if hasattr(model, "param_groups") and callable(model.param_groups):
        named = model.param_groups(norm_weight_group=norm_weight_group)
    else:
        weights, biases = split_parameters(model, norm_weight_group)
        named = {"pretrained_weights": weights, "pretrained_biases": biases}
    groups = []
    for name, mult in zip(GROUP_NAMES, multipliers, strict=True):
        params = [p for p in named.get(name, []) if p.requires_grad]
        if params:
            wd = weight_decay if _DECAYED[name] or decay_biases else 0.0
            groups.append({"params": params, "lr": lr * mult, "weight_decay": wd, "name": name})
    if not groups:
        raise ConfigError(f"{type(model).__name__} has no trainable parameters")
    return groups


def build_optimizer(
    groups: list[dict], name: str = "sgd", momentum: float = 0.0, nesterov: bool = False
) -> torch.optim.Optimizer:
    """SGD or AdamW over ``groups``.

    Args:
        groups: Parameter groups (:func:`param_groups`).
        name: ``sgd`` or ``adamw``.
        momentum: SGD momentum (the CAM reference is effectively 0).
        nesterov: SGD with Nesterov momentum (needs ``momentum > 0``).

    Raises:
        ConfigError: Unknown optimiser, or Nesterov without SGD momentum.
    """
    if nesterov and (name != "sgd" or momentum <= 0):
        raise ConfigError(
            f"train.nesterov=true needs train.optimizer=sgd and train.momentum > 0, got "
            f"optimizer={name!r}, momentum={momentum}"
        )
    if name == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=momentum, nesterov=nesterov)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=groups[0]["lr"])
    raise ConfigError(f"train.optimizer must be 'sgd' or 'adamw', got {name!r}")


def poly_factor(step: int, total_steps: int, power: float = 0.9) -> float:
    """``(1 − k/K)^power``, clamped to 0 past the end."""
    return max(0.0, 1.0 - step / max(1, total_steps)) ** power


def cosine_factor(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Linear warmup ``k/W`` for ``k < W``, then ``½(1 + cos(π·(k − W)/(K − W)))``, 0 past K."""
    if step < warmup_steps:
        return step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    poly_power: float = 0.9,
    onecycle_pct: float = 0.25,
    warmup_steps: int = 0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-optimiser-step schedule whose peak (poly: initial) lr is each group's ``lr``.

    Raises:
        ConfigError: Unknown schedule, no steps, or a warmup outside ``cosine``'s ``[0, K)``.
    """
    if total_steps < 1:
        raise ConfigError("training has no optimiser steps (dataset smaller than one batch?)")
    if warmup_steps and name != "cosine":
        raise ConfigError(
            f"train.warmup_steps={warmup_steps} applies to train.schedule=cosine only "
            f"(got {name!r}; onecycle has its own warmup, train.onecycle_pct)"
        )
    if name == "cosine":
        if not 0 <= warmup_steps < total_steps:
            raise ConfigError(
                f"train.warmup_steps must be in [0, {total_steps}) (the optimiser steps of the "
                f"run), got {warmup_steps}"
            )
        fn_cos: Callable[[int], float] = lambda k: cosine_factor(k, total_steps, warmup_steps)  # noqa: E731
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn_cos)
    if name == "poly":
        fn: Callable[[int], float] = lambda k: poly_factor(k, total_steps, poly_power)  # noqa: E731
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total_steps + 1,  # OneCycleLR refuses a step past its total
            pct_start=onecycle_pct,
        )
    raise ConfigError(f"train.schedule must be 'poly', 'onecycle' or 'cosine', got {name!r}")
