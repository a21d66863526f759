"""The training engine shared by every task: loop, AMP, accumulation, DDP, resume, run dir.

:class:`Trainer` runs a :class:`~wsss.train.tasks.base.Task` (see its module for the contract;
``train.task`` selects it, ``cam`` by default, whose ``train.strategy`` picks the CAM strategy)
over a dataset and writes a run directory::

    config.yaml, run_info.json      resolved configuration, versions, seed
    metrics.jsonl                   one JSON object per logged step / validation
    checkpoints/last.safetensors    the task's exported model (+ last.json: architecture,
                                    classes, config, ...), rebuilt by wsss.models.load_model
    checkpoints/best.safetensors    when ``train.select_by`` names a validation metric
    checkpoints/state.json          resumable state (+ state-<step>.safetensors)
    tensorboard/                    with ``train.tensorboard=true`` (the ``tensorboard``
                                    extra: ``pip install "wsss[tensorboard]"``)

One process at a time trains into a run directory (it holds ``RUN/.lock``); temporary files
that a killed process left there are removed when the next one starts. An interrupted run
resumed with ``resume=True`` continues from the last saved state and ends with the same
weights as an uninterrupted one (on the same device and software). Progress goes to stderr:
bars on a terminal, plain lines (every ``train.log_every`` steps and at each validation)
otherwise or with ``progress=False`` (see :mod:`wsss.train.logs`).
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsss.config import (
    Config,
    config_to_dict,
    dataclass_from_dict,
    save_resolved,
)
from wsss.data.base import SegmentationDataset
from wsss.data.check import verify_files
from wsss.data.loader import SeededSampler, build_train_loader
from wsss.errors import ConfigError, WsssError
from wsss.io.atomic import clean_stale_temporaries
from wsss.io.checkpoints import CHECKPOINT_DIR, load_state_file, save_state_file
from wsss.models import save_model
from wsss.runtime import distributed as ddp
from wsss.runtime import resolve_device, seed_everything
from wsss.train.logs import ConsoleReport, MetricsLogger, check_tensorboard
from wsss.train.optim import build_optimizer, build_scheduler, param_groups
from wsss.train.rundir import RunLock
from wsss.train.state import capture_state, restore_state
from wsss.train.tasks import Phase, StepContext, Task, resolve_task
from wsss.train.validation import ValidationHook

__all__ = ["Trainer", "TrainingInterrupted", "train"]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`Trainer.fit`; the message says what was saved and how to resume."""


class Trainer:
    """Trains the task that ``config.train`` selects on ``dataset``.

    Args:
        config: The run's configuration.
        run_dir: Output directory (created).
        dataset: Training split.
        hooks: Validation hooks run every ``train.val_every`` epochs and after the last.
        resume: Continue from ``run_dir``'s saved state; without it, an existing state is an
            error (nothing is overwritten).
        progress: Progress bars on a terminal; False prints plain lines instead.
        val_dataset: Validation split; adds the task's own validation hooks for it.

    The trainer holds the run directory's lock from construction until :meth:`fit` returns
    (or :meth:`close`).

    Raises:
        ConfigError: Unknown task, strategy or task argument, inconsistent settings, or a run
            directory in use by another training.
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        dataset: SegmentationDataset,
        hooks: Sequence[ValidationHook] = (),
        resume: bool = False,
        progress: bool = True,
        val_dataset: SegmentationDataset | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.state_dir = self.run_dir / CHECKPOINT_DIR
        self.hooks = list(hooks)
        self.progress = progress
        self.dist = ddp.init_distributed()
        tc = config.train
        self.device = resolve_device(tc.device, self.dist.local_rank)
        _check_train_config(config)
        task_cls = resolve_task(config)
        if len(dataset) == 0:
            raise ConfigError(f"the training split {config.data.split!r} is empty")

        seed_everything(tc.seed)
        args = dataclass_from_dict(task_cls.Args, tc.strategy_args, "train.strategy_args")
        self.task: Task = task_cls(config, list(dataset.classes), args).to(self.device)
        self.phases: list[Phase] = self.task.phases()
        _check_phases(self.task, self.phases)
        if val_dataset is not None:
            self.hooks.extend(self.task.validation_hooks(val_dataset, progress=progress))

        samples = self.task.train_data(dataset)
        self.sampler = SeededSampler(
            len(samples),
            tc.seed,
            shuffle=True,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.loader = build_train_loader(
            samples,
            self.sampler,
            tc.batch_size,
            num_workers=tc.num_workers,
            pin_memory=self.device.type == "cuda",
            collate=self.task.collate(),
        )
        self.steps_per_epoch = self.sampler.shard_size() // tc.batch_size // tc.accumulate
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"{len(dataset)} training images give no full optimiser step of "
                f"train.batch_size={tc.batch_size} × train.accumulate={tc.accumulate}"
                + (f" per process ({self.dist.world_size} processes)" if self.dist.enabled else "")
            )
        self.total_steps = tc.epochs * self.steps_per_epoch

        self.amp = tc.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if tc.amp_dtype == "bfloat16" else torch.float16
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        for phase in self.phases:
            module = getattr(self.task, phase.module)
            groups = param_groups(
                module,
                tc.lr * phase.lr_scale,
                tc.weight_decay,
                tc.lr_multipliers,
                tc.norm_weight_group,
                tc.bias_weight_decay,
            )
            opt = build_optimizer(groups, tc.optimizer, tc.momentum, tc.nesterov)
            self.optimizers[phase.name] = opt
            self.schedulers[phase.name] = build_scheduler(
                opt,
                tc.schedule,
                phase.num_steps(self.total_steps),
                tc.poly_power,
                tc.onecycle_pct,
                tc.warmup_steps,
            )
            self.scalers[phase.name] = torch.amp.GradScaler(
                self.device.type, enabled=self.amp and self.amp_dtype == torch.float16
            )

        self.nets: dict[str, nn.Module] = {}
        if self.dist.enabled:
            for name in dict.fromkeys(p.module for p in self.phases):
                self.nets[name] = ddp.wrap_ddp(getattr(self.task, name), self.device)
        self.task.set_nets(self.nets)

        self.step = 0
        self.saved_step: int | None = None
        self.best: dict[str, Any] | None = None
        self.last_metrics: dict[str, float] = {}
        # Rank 0 owns the run directory from here until fit() ends.
        self.lock = RunLock(self.run_dir) if self.dist.is_main else None
        self._acquire()
        try:
            if resume:
                self._load_state()
            elif (self.state_dir / "state.json").is_file():
                raise ConfigError(
                    f"{self.run_dir} already holds a training run; to continue it, add --resume "
                    f"(wsss train --out {self.run_dir} --resume; in Python: resume=True), or "
                    f"choose another output directory to start a new one"
                )
        except BaseException:
            self._release()
            raise

    @property
    def strategy(self) -> Task:
        """The task (the name the CAM strategies gave it; kept for existing code)."""
        return self.task

    def _acquire(self) -> None:
        """Lock the run directory, then remove what a killed process left half-written."""
        if self.lock is None or self.lock.held:
            return
        self.lock.acquire()
        for folder in (self.run_dir, self.state_dir):
            clean_stale_temporaries(folder)

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def close(self) -> None:
        """Release the run directory without training (:meth:`fit` releases it itself)."""
        self._release()

    # ------------------------------------------------------------------------------ loop

    def fit(self, max_steps: int | None = None) -> dict[str, float]:
        """Train to the end (or until global step ``max_steps``, saving a resumable state).

        Returns:
            The last validation metrics (empty without hooks).

        Raises:
            TrainingInterrupted: Ctrl-C; the message says how to resume.
        """
        tc = self.config.train
        main = self.dist.is_main
        self._acquire()
        logger = report = None
        try:
            logger = MetricsLogger(self.run_dir, tc.tensorboard) if main else None
            if main:
                save_resolved(
                    self.config,
                    self.run_dir,
                    {"world_size": self.dist.world_size, "device": str(self.device)},
                )
                logger.truncate(self.step)
            report = ConsoleReport(
                self.total_steps, tc.epochs, tc.log_every, self.progress, main, self.step
            )
            self.task.train()
            start_epoch = self.step // self.steps_per_epoch
            for epoch in range(start_epoch, tc.epochs):
                done = self.step - epoch * self.steps_per_epoch
                self.sampler.set_epoch(epoch, skip=done * tc.batch_size * tc.accumulate)
                batches = iter(self.loader)
                report.start_epoch(epoch, self.steps_per_epoch, done)
                end = (epoch + 1) * self.steps_per_epoch
                while self.step < end:
                    micro = [next(batches) for _ in range(tc.accumulate)]
                    logs = self._train_step(micro, epoch)
                    self.step += 1
                    report.step(epoch, logs)
                    if main and (self.step % tc.log_every == 0 or self.step == end):
                        logger.log({"step": self.step, "epoch": epoch, **logs})
                    stop = max_steps is not None and self.step >= max_steps
                    periodic = tc.checkpoint_every and self.step % tc.checkpoint_every == 0
                    if (stop or periodic) and self.step < end:
                        self._save_state(epoch)
                    if stop and self.step < end:
                        return self.last_metrics
                report.end_epoch()
                del batches
                self._end_epoch(epoch, logger, report)
                if max_steps is not None and self.step >= max_steps:
                    break
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._interrupted_message()) from None
        finally:
            if report is not None:
                report.close()
            if logger is not None:
                logger.close()
            self._release()
        if self.dist.enabled:
            for name in self.nets:
                ddp.broadcast_buffers(getattr(self.task, name))
        return self.last_metrics

    def _interrupted_message(self) -> str:
        if self.saved_step is None:
            return (
                f"training interrupted at step {self.step} of {self.total_steps} before any "
                f"state was saved (one is saved at the end of each epoch, or every "
                f"train.checkpoint_every steps); rerun the same command to start again"
            )
        return (
            f"training interrupted at step {self.step} of {self.total_steps}; "
            f"{self.state_dir / 'state.json'} holds step {self.saved_step}. To continue, run "
            f"the same command with --resume (wsss train --out {self.run_dir} --resume; "
            f"in Python: resume=True)"
        )

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def _train_step(self, micro_batches: list, epoch: int) -> dict[str, float]:
        tc = self.config.train
        active = [p for p in self.phases if p.active(self.step)]
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        n = len(micro_batches)
        ctx = None
        for i, batch in enumerate(micro_batches):
            batch = batch.to(self.device, non_blocking=True)
            ctx = StepContext(self.step, self.total_steps, epoch, i, n, self.device)
            with ddp.no_sync(self.nets.values(), enabled=self.dist.enabled and i < n - 1):
                for phase in active:
                    with self._autocast():
                        out = self.task.loss(phase.name, batch, ctx)
                    loss = out.loss / n if tc.accumulate_mode == "mean" else out.loss
                    self.scalers[phase.name].scale(loss).backward()
                    prefix = "" if len(self.phases) == 1 else f"{phase.name}/"
                    sums[f"{prefix}loss"] += out.loss.detach().float() / n
                    for k, v in out.logs.items():
                        sums[f"{prefix}{k}"] += torch.as_tensor(v, device=self.device).float() / n
        lrs = {p.name: self.optimizers[p.name].param_groups[0]["lr"] for p in self.phases}
        for phase in active:
            opt, scaler = self.optimizers[phase.name], self.scalers[phase.name]
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            self.schedulers[phase.name].step()
        self.task.after_step(ctx)
        logs = {k: v.item() for k, v in sums.items()}
        if len(self.phases) > 1:
            logs["loss"] = sum(logs.get(f"{p.name}/loss", 0.0) for p in active)
        if not math.isfinite(logs["loss"]) and not self.scalers[active[0].name].is_enabled():
            raise WsssError(
                f"training diverged at step {self.step} (loss {logs['loss']}); lower train.lr "
                f"or check the data"
            )
        # The lr this step used (of the first parameter group), before the schedule advanced.
        logs["lr"] = lrs[self.phases[0].name]
        if len(self.phases) > 1:
            logs.update({f"lr/{name}": lr for name, lr in lrs.items()})
        return logs

    def _end_epoch(self, epoch: int, logger: MetricsLogger | None, report: ConsoleReport) -> None:
        tc = self.config.train
        last = epoch == tc.epochs - 1
        validate = self.hooks and ((tc.val_every and (epoch + 1) % tc.val_every == 0) or last)
        metrics: dict[str, float] = {}
        oracle = False
        product = self.task.product()
        if validate and self.dist.is_main:
            self.task.eval()
            for hook in self.hooks:
                values = hook(product, self.device)
                metrics.update(values)
                if tc.select_by in values:
                    oracle = bool(hook.oracle)
            self.task.train()
            self.last_metrics = metrics
            logger.log({"step": self.step, "epoch": epoch, **metrics})
            report.validation(self.step, epoch, metrics)
        if self.dist.is_main:
            meta = self._meta(epoch + 1, metrics)
            save_model(self.state_dir / "last", product, meta)
            if tc.select_by and metrics:
                if tc.select_by not in metrics:
                    raise ConfigError(
                        f"train.select_by={tc.select_by!r} is not a validation metric; "
                        f"available: {', '.join(metrics)}"
                    )
                value = metrics[tc.select_by]
                lower = "loss" in tc.select_by
                better = self.best is None or (
                    value < self.best["value"] if lower else value > self.best["value"]
                )
                if better:
                    self.best = {"value": value, "step": self.step, "oracle": oracle}
                    meta = {**meta, "selected_by": tc.select_by, "oracle": oracle}
                    save_model(self.state_dir / "best", product, meta)
        self._save_state(epoch + 1)

    def _meta(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "classes": self.task.classes,
            "config": config_to_dict(self.config),
            "task": self.config.train.task,
            **self.task.export_meta(),
            "step": self.step,
            "epoch": epoch,
            "metrics": metrics,
        }

    # ------------------------------------------------------------------------------ state

    def _save_state(self, epoch: int) -> None:
        if self.dist.is_main:
            tensors, info = capture_state(self, epoch)
            save_state_file(self.state_dir, tensors, info)
        self.saved_step = self.step
        ddp.barrier()

    def _load_state(self) -> None:
        loaded = load_state_file(self.state_dir)
        if loaded is None:
            raise ConfigError(
                f"nothing to resume: {self.state_dir / 'state.json'} does not exist (no state "
                f"was saved yet); run the same command without --resume to start the run"
            )
        tensors, info = loaded
        restore_state(self, tensors, info, self.state_dir)
        self.saved_step = self.step


def _check_train_config(config: Config) -> None:
    tc = config.train
    for name in ("epochs", "batch_size", "accumulate", "log_every"):
        if getattr(tc, name) < 1:
            raise ConfigError(f"train.{name} must be at least 1, got {getattr(tc, name)}")
    if tc.lr <= 0:
        raise ConfigError(f"train.lr must be positive, got {tc.lr}")
    if not 0 <= tc.label_smoothing < 1:
        raise ConfigError(f"train.label_smoothing must be in [0, 1), got {tc.label_smoothing}")
    if tc.warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps must be at least 0, got {tc.warmup_steps}")
    if tc.tensorboard:
        check_tensorboard()


def _check_phases(task: Task, phases: list[Phase]) -> None:
    names = [p.name for p in phases]
    if not phases or len(set(names)) != len(names):
        raise ValueError(f"{type(task).__name__}.phases() must return uniquely named phases")
    for p in phases:
        if not isinstance(getattr(task, p.module, None), nn.Module) or p.every < 1:
            raise ValueError(f"phase {p.name!r}: no submodule {p.module!r} or every < 1")


def train(
    config: Config,
    run_dir: str | Path,
    resume: bool = False,
    dataset: SegmentationDataset | None = None,
    val_dataset: SegmentationDataset | None = None,
    hooks: Sequence[ValidationHook] | None = None,
    progress: bool = True,
) -> Path:
    """Train the task ``config`` selects and return its exported ``last.safetensors``.

    Datasets default to ``config.data`` read with :func:`wsss.data.datasets.build_dataset`;
    the task's validation hooks run on ``data.val_split`` unless ``hooks`` are given.
    """
    dc = config.data
    if dataset is None:
        dataset = _build_dataset(config, dc.split)
    verify_files(dataset)  # a missing image fails now, not mid-epoch
    if hooks is not None:
        val_dataset = None
    elif val_dataset is None and dc.val_split and config.train.val_every:
        val_dataset = _build_dataset(config, dc.val_split)
    if val_dataset is not None:
        if len(val_dataset):
            verify_files(val_dataset)
        else:
            val_dataset = None
    trainer = Trainer(
        config,
        run_dir,
        dataset,
        hooks or (),
        resume=resume,
        progress=progress,
        val_dataset=val_dataset,
    )
    trainer.fit()
    return trainer.state_dir / "last.safetensors"


def _build_dataset(config: Config, split: str) -> SegmentationDataset:
    dc = config.data
    if dc.root is None:
        raise ConfigError("data.root is not set (pass --data ROOT or data.root=PATH)")
    try:
        from wsss.data.datasets import build_dataset
    except ImportError as e:
        raise ConfigError(f"dataset readers are unavailable ({e})") from None
    dataset = build_dataset(dc.format, dc.root, split)
    if dc.max_samples is not None and dc.max_samples < len(dataset):
        dataset = copy.copy(dataset)
        dataset.ids = list(dataset.ids[: dc.max_samples])
    return dataset
