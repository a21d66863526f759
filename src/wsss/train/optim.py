"""Optimisers over the four parameter groups and their learning-rate schedules (METHODS.md §1).

Groups (P-NOC and Puzzle-CAM code): pretrained weights and norm scales γ (lr, wd); pretrained
biases and norm shifts β (2·lr, wd 0); new weights, i.e. the class head (10·lr, wd); new biases
(20·lr, wd 0). ``norm_weight_group="biases"`` (setting ``train.norm_weight_group``) moves γ to
the bias group instead (2·lr, wd 0), as ``wsss`` did before following the reference.
Schedules advance once per optimiser step: ``poly`` is ``lr·(1 − k/K)^power``; ``onecycle`` is
torch's :class:`~torch.optim.lr_scheduler.OneCycleLR` peaking at each group's lr.
"""

from __future__ import annotations

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
            wd = weight_decay if _DECAYED[name] else 0.0
            groups.append({"params": params, "lr": lr * mult, "weight_decay": wd, "name": name})
    if not groups:
        raise ConfigError(f"{type(model).__name__} has no trainable parameters")
    return groups


def build_optimizer(
    groups: list[dict], name: str = "sgd", momentum: float = 0.0
) -> torch.optim.Optimizer:
    """SGD (momentum as given; the reference is effectively 0) or AdamW over ``groups``."""
    if name == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=groups[0]["lr"])
    raise ConfigError(f"train.optimizer must be 'sgd' or 'adamw', got {name!r}")


def poly_factor(step: int, total_steps: int, power: float = 0.9) -> float:
    """``(1 − k/K)^power``, clamped to 0 past the end."""
    return max(0.0, 1.0 - step / max(1, total_steps)) ** power


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    poly_power: float = 0.9,
    onecycle_pct: float = 0.25,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-optimiser-step schedule whose peak (poly: initial) lr is each group's ``lr``."""
    if total_steps < 1:
        raise ConfigError("training has no optimiser steps (dataset smaller than one batch?)")
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
    raise ConfigError(f"train.schedule must be 'poly' or 'onecycle', got {name!r}")
