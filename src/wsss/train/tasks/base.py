"""The interface between the training engine and a training task.

Contract
--------
A task is an :class:`torch.nn.Module` registered by name in :data:`TASKS`
(``@TASKS.register("name")``; ``train.task`` selects it). The engine owns the loop, gradient
accumulation, AMP, the optimisers, schedules and gradient scalers, DDP, the run directory,
resumable state, logging and the calls to validation; the task owns everything that depends
on what is trained: its networks, its training samples and their collation, its losses, its
validation hooks and the module it exports.

Selection and construction
    ``TASKS.get(train.task).resolve(config)`` gives the class to build (a task may dispatch
    to a variant, as the ``cam`` task does on ``train.strategy``). ``Task(config, classes,
    args)``: ``config`` is the whole :class:`~wsss.config.Config`, ``classes`` the training
    set's class names, ``args`` the task's own settings, an instance of the dataclass ``Args``
    (class attribute) built from ``config.train.strategy_args`` (unknown keys are a
    ``ConfigError``). The constructor builds every network as a submodule, among them the
    one :meth:`product` returns (by default ``self.model``). Module creation must be
    deterministic (the engine seeds torch before constructing).

Data (:meth:`train_data`, :meth:`collate`)
    ``train_data(dataset)`` wraps the split's :class:`~wsss.data.base.SegmentationDataset`
    into a map-style dataset indexed by ``(index, seed)`` (see
    :class:`~wsss.data.loader.SeededSampler`); ``collate()`` turns a list of its samples into
    a batch object with ``.to(device, non_blocking=...)``. The defaults yield
    :class:`~wsss.data.loader.Batch` objects of augmented images, image labels and, when
    :attr:`uses_masks` is set, the dataset's masks (``load_mask``), geometrically transformed
    with the image and pasted along by CutMix; MixUp cannot mix hard masks and is refused.
    A task that trains on other targets (pseudo masks of a run, hint maps) passes a dataset
    view whose ``load_mask`` reads them, or overrides these two methods.

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
    how P-NOC's ``noc_grad="reference"`` arises); a task that wants them isolated must
    not let them flow (e.g. call the raw module with ``torch.func.functional_call`` on
    detached parameters). Finally ``after_step(ctx)`` runs.

Networks under DDP
    Call ``self.net(name)`` instead of ``getattr(self, name)`` in ``loss`` for every module a
    phase trains: under DDP it is the wrapped module, which synchronises gradients (and
    honours ``no_sync`` during accumulation). Several forward passes per step are fine.
    Frozen modules, and modules whose parameters must not receive gradients in that call,
    are used directly.

Modes
    The engine calls ``task.train()`` before training and ``eval()`` around validation.
    Override :meth:`train` to keep frozen parts (or frozen BN statistics) in eval mode.

Validation (:meth:`validation_hooks`)
    Hooks for the validation split, each called as ``hook(task.product(), device)`` at the
    end of every ``train.val_every``-th epoch (see :mod:`wsss.train.validation`).

Export and checkpoints
    The engine saves :meth:`product` with :func:`wsss.models.save_model` as the run's
    ``last`` (and ``best``) checkpoint: its ``architecture()`` must rebuild it through the
    model registry. The JSON beside it holds ``classes``, ``config``, ``task``, the keys of
    :meth:`export_meta`, ``step``, ``epoch`` and ``metrics``. The resumable training state
    holds every module of :meth:`state_modules` (default: the product and every phase's
    module), optimisers, schedules, scalers, the step, RNG states and :meth:`extra_state`
    (JSON-serialisable). Frozen modules are not saved; the constructor rebuilds them from
    their source (a checkpoint path in ``args``).

Inputs
    ``batch`` is what :meth:`collate` made, moved to the training device. ``ctx`` is a
    :class:`StepContext` with ``step`` t, ``total_steps`` T, ``epoch``, ``micro_step``,
    ``accumulate``, ``device`` and :meth:`StepContext.ramp`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from wsss.config import Config
from wsss.data.base import SegmentationDataset
from wsss.data.loader import ClassificationDataset, Collate
from wsss.data.transforms import BatchMix, TrainTransform
from wsss.errors import ConfigError
from wsss.registry import Registry
from wsss.train.validation import ValidationHook

__all__ = ["TASKS", "LossOutput", "NoArgs", "Phase", "StepContext", "Task"]


@dataclass(frozen=True)
class Phase:
    """One optimiser of a task.

    Attributes:
        name: Phase name, passed to :meth:`Task.loss` and used in logs and checkpoints.
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
    """What :meth:`Task.loss` returns.

    Attributes:
        loss: Scalar to back-propagate (before accumulation scaling).
        logs: Extra scalars to log (floats or 0-d tensors; averaged over the step).
    """

    loss: torch.Tensor
    logs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepContext:
    """Where the loop is when :meth:`Task.loss` is called.

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
    """Settings of a task that has none."""


class Task(nn.Module):
    """Base class of training tasks; see the module docstring for the contract.

    Args:
        config: The run's configuration.
        classes: Class names of the training set.
        args: An instance of the subclass's ``Args`` dataclass.

    Attributes:
        uses_masks: The training samples carry masks (``Batch.masks``); MixUp is refused.
    """

    Args: ClassVar[type] = NoArgs
    uses_masks: ClassVar[bool] = False

    def __init__(self, config: Config, classes: list[str], args: Any = None) -> None:
        super().__init__()
        self.config = config
        self.classes = list(classes)
        self.args = args if args is not None else self.Args()
        self._nets: dict[str, nn.Module] = {}

    @classmethod
    def resolve(cls, config: Config) -> type[Task]:
        """The class to build for ``config`` (default: this one)."""
        return cls

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return len(self.classes)

    # ------------------------------------------------------------------------- data

    def train_transform(self) -> Callable:
        """The per-sample augmentation of ``data`` and ``train.augment`` (METHODS.md §1)."""
        dc, aug = self.config.data, self.config.train.augment
        return TrainTransform(
            dc.crop_size,
            dc.resize_long,
            hflip=aug.hflip,
            randaugment=aug.randaugment,
            color_jitter=aug.color_jitter,
        )

    def batch_mix(self) -> BatchMix:
        """MixUp/CutMix as ``train.augment`` says.

        Raises:
            ConfigError: MixUp is enabled and the task trains on masks.
        """
        aug = self.config.train.augment
        mix = BatchMix(aug.mixup_alpha, aug.cutmix_alpha, aug.mix_prob)
        if self.uses_masks and mix.enabled and aug.mixup_alpha > 0:
            raise ConfigError(
                f"train.augment.mixup_alpha={aug.mixup_alpha}: MixUp blends two images but "
                f"cannot blend their masks, and the {self.config.train.task!r} task trains on "
                f"masks; set it to 0 (CutMix, train.augment.cutmix_alpha, pastes the masks too)"
            )
        return mix

    def train_data(self, dataset: SegmentationDataset) -> Dataset:
        """Training samples of ``dataset``, indexed by ``(index, seed)``."""
        return ClassificationDataset(dataset, self.train_transform(), with_masks=self.uses_masks)

    def collate(self) -> Callable[[list], Any]:
        """Samples → a batch with ``.to(device, non_blocking=...)`` (mixing included)."""
        return Collate(self.batch_mix())

    # ------------------------------------------------------------------------- losses

    def phases(self) -> list[Phase]:
        """The task's optimisers; default: one phase ``main`` training ``model``."""
        return [Phase("main", "model")]

    def loss(self, phase: str, batch: Any, ctx: StepContext) -> LossOutput:
        """The loss of ``phase`` on one micro-batch."""
        raise NotImplementedError

    def after_step(self, ctx: StepContext) -> None:
        """Called after every optimiser step (all phases stepped)."""

    # ------------------------------------------------------------------------- validation, export

    def validation_hooks(
        self, dataset: SegmentationDataset, progress: bool = True
    ) -> list[ValidationHook]:
        """Validation hooks on the split ``dataset`` (default: none)."""
        return []

    def product(self) -> nn.Module:
        """The trained module the run exports (default: ``self.model``)."""
        return self.model

    def export_meta(self) -> dict[str, Any]:
        """Extra JSON-serialisable keys for the exported checkpoint's metadata."""
        return {}

    # ------------------------------------------------------------------------- engine hooks

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
        return {n: getattr(self, n) for n in dict.fromkeys(names) if hasattr(self, n)}

    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable task state to checkpoint (default: none)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""


TASKS: Registry[type[Task]] = Registry("training task")
