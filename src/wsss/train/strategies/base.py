"""The interface between the training engine and a training strategy.

Contract
--------
A strategy is an :class:`torch.nn.Module` registered by name in
``wsss.train.strategies.STRATEGIES`` (``@STRATEGIES.register("name")``). The engine owns the
data, the loop, gradient accumulation, AMP, the optimisers, schedules and gradient scalers,
DDP, checkpoints, logging and validation; the strategy owns its networks and its losses.

Construction
    ``Strategy(config, classes, args)``: ``config`` is the whole :class:`~wsss.config.Config`,
    ``classes`` the training set's class names, ``args`` the strategy's own settings, an
    instance of the dataclass ``Args`` (class attribute) built from
    ``config.train.strategy_args`` (unknown keys are a ``ConfigError``). The constructor builds
    every network as a submodule: ``self.model`` (the CAM classifier whose weights are the
    product; :meth:`build_classifier` makes it from ``config.model``) and any others, e.g. a
    frozen ordinary classifier loaded with :func:`wsss.models.load_model`.
    Module creation must be deterministic (the engine seeds torch before constructing).

Optimisers (:meth:`phases`)
    One :class:`Phase` per optimiser: ``Phase(name, module, lr_scale=1.0, every=1,
    offset=0)``. The engine builds, for each phase, an optimiser over the four parameter
    groups of ``getattr(self, module)`` (:func:`wsss.train.optim.param_groups`, lr
    ``train.lr · lr_scale``; frozen parameters are left out), its own schedule over the
    phase's own number of optimiser steps (:meth:`Phase.num_steps`), and its own AMP gradient
    scaler. A phase is active at steps ``t`` with ``(t + offset) % every == 0``.

One optimiser step ``t`` (``0 ≤ t < T``)
    For each of the ``accumulate`` micro-batches, for each active phase in declared order, the
    engine calls ``loss(phase_name, batch, ctx)`` under autocast and back-propagates its loss
    (divided by ``accumulate`` in ``mean`` mode) with that phase's scaler. A later phase may
    reuse what an earlier one stored on ``self`` for the same micro-batch (e.g. detached maps).
    After the last micro-batch, each active phase's optimiser steps (in declared order), then
    its gradients are zeroed and its schedule advances. Gradients that one phase's backward
    leaves on another phase's parameters are therefore kept until that phase steps (this is
    how P-NOC's ``noc_grad="reference"`` arises); a strategy that wants them isolated must
    not let them flow (e.g. call the raw module with ``torch.func.functional_call`` on
    detached parameters). Finally ``after_step(ctx)`` runs.

Networks under DDP
    Call ``self.net(name)`` instead of ``getattr(self, name)`` in ``loss`` for every module a
    phase trains: under DDP it is the wrapped module, which synchronises gradients (and
    honours ``no_sync`` during accumulation). Several forward passes per step are fine.
    Frozen modules, and modules whose parameters must not receive gradients in that call,
    are used directly.

Modes
    The engine calls ``strategy.train()`` before training and ``eval()`` around validation.
    Override :meth:`train` to keep frozen parts (or frozen BN statistics) in eval mode.

Checkpoints
    The engine saves ``self.model`` as the run's classifier checkpoint, and in the resumable
    training state: the state of every module in :meth:`state_modules` (default: ``model`` and
    every phase's module), optimisers, schedules, scalers, the step, RNG states and
    :meth:`extra_state` (JSON-serialisable). Frozen modules are not saved; they are rebuilt
    by the constructor from their source (a checkpoint path in ``args``).

Inputs
    ``batch`` is a :class:`~wsss.data.loader.Batch` on the training device (normalised images
    ``B×3×S×S``, float ``B×C`` labels, possibly soft after MixUp/CutMix). ``ctx`` is a
    :class:`StepContext` with ``step`` t, ``total_steps`` T, ``epoch``, ``micro_step``,
    ``accumulate``, ``device`` and :meth:`StepContext.ramp`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from wsss.config import Config
from wsss.data.loader import Batch
from wsss.models.classifier import CAMClassifier
from wsss.train.losses import multilabel_soft_margin

__all__ = ["LossOutput", "NoArgs", "Phase", "StepContext", "Strategy"]


@dataclass(frozen=True)
class Phase:
    """One optimiser of a strategy.

    Attributes:
        name: Phase name, passed to :meth:`Strategy.loss` and used in logs and checkpoints.
        module: Attribute name of the submodule this phase's optimiser trains.
        lr_scale: Multiplies ``train.lr`` for this optimiser.
        every: The phase runs at steps ``t`` with ``(t + offset) % every == 0``.
        offset: Shifts the phase's steps: 0 runs it at ``t = 0, every, 2·every, …``;
            1 at ``t = every − 1, 2·every − 1, …`` (at the end of each window of ``every``).
    """

    name: str
    module: str = "model"
    lr_scale: float = 1.0
    every: int = 1
    offset: int = 0

    def active(self, step: int) -> bool:
        """Whether the phase runs at optimiser step ``step``."""
        return (step + self.offset) % self.every == 0

    def num_steps(self, total_steps: int) -> int:
        """Optimiser steps of this phase in a run of ``total_steps`` steps."""
        return len(range((-self.offset) % self.every, total_steps, self.every))


@dataclass
class LossOutput:
    """What :meth:`Strategy.loss` returns.

    Attributes:
        loss: Scalar to back-propagate (before accumulation scaling).
        logs: Extra scalars to log (floats or 0-d tensors; averaged over the step).
    """

    loss: torch.Tensor
    logs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepContext:
    """Where the loop is when :meth:`Strategy.loss` is called.

    Attributes:
        step: Optimiser step index t (0-based, global over epochs).
        total_steps: Total optimiser steps T of the run.
        epoch: Epoch index (0-based).
        micro_step: Micro-batch index within the accumulation window.
        accumulate: Micro-batches per optimiser step.
        device: Training device.
    """

    step: int
    total_steps: int
    epoch: int
    micro_step: int
    accumulate: int
    device: torch.device

    def ramp(self, start: float, end: float, fraction: float = 1.0) -> float:
        """``min(start + (end − start)·t / (T·fraction), end)`` (METHODS.md §2).

        Written for an increasing ramp as in the papers; a decreasing one clamps at ``end``
        from the other side.
        """
        value = start + (end - start) * self.step / (self.total_steps * fraction)
        return min(value, end) if end >= start else max(value, end)


@dataclass
class NoArgs:
    """Settings of a strategy that has none."""


class Strategy(nn.Module):
    """Base class of training strategies; see the module docstring for the contract.

    Args:
        config: The run's configuration.
        classes: Foreground class names of the training set.
        args: An instance of the subclass's ``Args`` dataclass.
    """

    Args: ClassVar[type] = NoArgs
    model: CAMClassifier

    def __init__(self, config: Config, classes: list[str], args: Any = None) -> None:
        super().__init__()
        self.config = config
        self.classes = list(classes)
        self.args = args if args is not None else self.Args()
        self._nets: dict[str, nn.Module] = {}

    @property
    def num_classes(self) -> int:
        """Number of foreground classes C."""
        return len(self.classes)

    def build_classifier(self) -> CAMClassifier:
        """A :class:`CAMClassifier` as ``config.model`` describes, with C classes."""
        m = self.config.model
        return CAMClassifier(
            backbone=m.backbone,
            num_classes=self.num_classes,
            output_stride=m.output_stride,
            pretrained=m.pretrained,
            weights=m.weights,
        )

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``ℓ(z, LS_ε(y))`` with ε = ``train.label_smoothing``."""
        return multilabel_soft_margin(logits, labels, self.config.train.label_smoothing)

    def phases(self) -> list[Phase]:
        """The strategy's optimisers; default: one phase ``main`` training ``model``."""
        return [Phase("main", "model")]

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        """The loss of ``phase`` on one micro-batch."""
        raise NotImplementedError

    def after_step(self, ctx: StepContext) -> None:
        """Called after every optimiser step (all phases stepped)."""

    def net(self, name: str) -> nn.Module:
        """The module ``name`` as the engine runs it (DDP-wrapped when distributed)."""
        wrapped = self._nets.get(name)
        return wrapped if wrapped is not None else getattr(self, name)

    def set_nets(self, nets: dict[str, nn.Module]) -> None:
        """Engine hook: register wrapped versions of trained modules."""
        self._nets = dict(nets)

    def state_modules(self) -> dict[str, nn.Module]:
        """Modules whose state goes into the resumable training state."""
        names = ["model", *(p.module for p in self.phases())]
        return {n: getattr(self, n) for n in dict.fromkeys(names)}

    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable strategy state to checkpoint (default: none)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""
