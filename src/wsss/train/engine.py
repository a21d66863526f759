"""The training engine shared by every strategy: loop, AMP, accumulation, DDP, checkpoints.

:class:`Trainer` runs a :class:`~wsss.train.strategies.base.Strategy` (see its module for the
contract) over a dataset and writes a run directory::

    config.yaml, run_info.json      resolved configuration, versions, seed
    metrics.jsonl                   one JSON object per logged step / validation
    checkpoints/last.safetensors    classifier weights (+ last.json: architecture, classes, ...)
    checkpoints/best.safetensors    when ``train.select_by`` names a validation metric
    checkpoints/state.json          resumable state (+ state-<step>.safetensors)

An interrupted run resumed with ``resume=True`` continues from the last saved state and ends
with the same weights as an uninterrupted one (on the same device and software).
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from wsss.config import (
    Config,
    config_to_dict,
    dataclass_from_dict,
    diff_settings,
    neutral_keys,
    save_resolved,
)
from wsss.data.base import SegmentationDataset
from wsss.data.loader import ClassificationDataset, SeededSampler, build_train_loader
from wsss.data.transforms import BatchMix, TrainTransform
from wsss.errors import ConfigError, WsssError
from wsss.io.atomic import atomic_write_text
from wsss.io.checkpoints import CHECKPOINT_DIR, load_state_file, save_state_file
from wsss.models import save_model
from wsss.runtime import distributed as ddp
from wsss.runtime import resolve_device, seed_everything
from wsss.train.optim import build_optimizer, build_scheduler, param_groups
from wsss.train.strategies import STRATEGIES, Phase, StepContext, Strategy
from wsss.train.validation import ClassificationValidation, ValidationHook

__all__ = ["MetricsLogger", "Trainer", "train"]


class MetricsLogger:
    """Appends JSON lines to ``metrics.jsonl``; mirrors scalars to TensorBoard when installed."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                pass

    def truncate(self, step: int) -> None:
        """Drop lines logged after ``step`` (by a run that was interrupted, then resumed)."""
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        keep = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
        atomic_write_text(self.path, "".join(f"{ln}\n" for ln in keep))

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (must contain ``step``)."""
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.writer.add_scalar(k, v, record["step"])

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.writer is not None:
            self.writer.close()


class Trainer:
    """Trains the strategy named by ``config.train.strategy`` on ``dataset``.

    Args:
        config: The run's configuration.
        run_dir: Output directory (created).
        dataset: Training split.
        hooks: Validation hooks run every ``train.val_every`` epochs and after the last.
        resume: Continue from ``run_dir``'s saved state; without it, an existing state is an
            error (nothing is overwritten).
        progress: Show progress bars.

    Raises:
        ConfigError: Unknown strategy or strategy argument, inconsistent settings.
    """

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        dataset: SegmentationDataset,
        hooks: Sequence[ValidationHook] = (),
        resume: bool = False,
        progress: bool = True,
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
        if config.model.num_classes not in (None, len(dataset.classes)):
            raise ConfigError(
                f"model.num_classes={config.model.num_classes} but the dataset has "
                f"{len(dataset.classes)} classes"
            )
        if len(dataset) == 0:
            raise ConfigError(f"the training split {config.data.split!r} is empty")

        seed_everything(tc.seed)
        try:
            strategy_cls = STRATEGIES.get(tc.strategy)
        except KeyError as e:
            raise ConfigError(f"train.strategy: {e.args[0]}") from None
        args = dataclass_from_dict(strategy_cls.Args, tc.strategy_args, "train.strategy_args")
        self.strategy: Strategy = strategy_cls(config, list(dataset.classes), args).to(self.device)
        self.phases: list[Phase] = self.strategy.phases()
        _check_phases(self.strategy, self.phases)

        transform = TrainTransform(
            config.data.crop_size,
            config.data.resize_long,
            hflip=tc.augment.hflip,
            randaugment=tc.augment.randaugment,
            color_jitter=tc.augment.color_jitter,
        )
        mix = BatchMix(tc.augment.mixup_alpha, tc.augment.cutmix_alpha, tc.augment.mix_prob)
        self.sampler = SeededSampler(
            len(dataset),
            tc.seed,
            shuffle=True,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.loader = build_train_loader(
            ClassificationDataset(dataset, transform),
            self.sampler,
            tc.batch_size,
            num_workers=tc.num_workers,
            mix=mix,
            pin_memory=self.device.type == "cuda",
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
            module = getattr(self.strategy, phase.module)
            groups = param_groups(
                module, tc.lr * phase.lr_scale, tc.weight_decay, tc.lr_multipliers
            )
            opt = build_optimizer(groups, tc.optimizer, tc.momentum)
            self.optimizers[phase.name] = opt
            self.schedulers[phase.name] = build_scheduler(
                opt, tc.schedule, phase.num_steps(self.total_steps), tc.poly_power, tc.onecycle_pct
            )
            self.scalers[phase.name] = torch.amp.GradScaler(
                self.device.type, enabled=self.amp and self.amp_dtype == torch.float16
            )

        self.nets: dict[str, nn.Module] = {}
        if self.dist.enabled:
            for name in dict.fromkeys(p.module for p in self.phases):
                self.nets[name] = ddp.wrap_ddp(getattr(self.strategy, name), self.device)
        self.strategy.set_nets(self.nets)

        self.step = 0
        self.best: dict[str, Any] | None = None
        self.last_metrics: dict[str, float] = {}
        if resume:
            self._load_state()
        elif (self.state_dir / "state.json").is_file():
            raise ConfigError(
                f"{self.run_dir} already holds a training run; resume it (--resume) or choose "
                f"another output directory"
            )

    # ------------------------------------------------------------------------------ loop

    def fit(self, max_steps: int | None = None) -> dict[str, float]:
        """Train to the end (or until global step ``max_steps``, saving a resumable state).

        Returns:
            The last validation metrics (empty without hooks).
        """
        tc = self.config.train
        main = self.dist.is_main
        logger = MetricsLogger(self.run_dir) if main else None
        if main:
            save_resolved(
                self.config,
                self.run_dir,
                {"world_size": self.dist.world_size, "device": str(self.device)},
            )
            logger.truncate(self.step)
        self.strategy.train()
        start_epoch = self.step // self.steps_per_epoch
        try:
            for epoch in range(start_epoch, tc.epochs):
                done = self.step - epoch * self.steps_per_epoch
                self.sampler.set_epoch(epoch, skip=done * tc.batch_size * tc.accumulate)
                batches = iter(self.loader)
                bar = tqdm(
                    total=self.steps_per_epoch,
                    initial=done,
                    desc=f"epoch {epoch + 1}/{tc.epochs}",
                    disable=not (main and self.progress),
                    dynamic_ncols=True,
                )
                end = (epoch + 1) * self.steps_per_epoch
                while self.step < end:
                    micro = [next(batches) for _ in range(tc.accumulate)]
                    logs = self._train_step(micro, epoch)
                    self.step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
                    if main and (self.step % tc.log_every == 0 or self.step == end):
                        logger.log({"step": self.step, "epoch": epoch, **logs})
                    stop = max_steps is not None and self.step >= max_steps
                    periodic = tc.checkpoint_every and self.step % tc.checkpoint_every == 0
                    if (stop or periodic) and self.step < end:
                        self._save_state(epoch)
                    if stop and self.step < end:
                        bar.close()
                        return self.last_metrics
                bar.close()
                del batches
                self._end_epoch(epoch, logger)
                if max_steps is not None and self.step >= max_steps:
                    break
        finally:
            if logger is not None:
                logger.close()
        if self.dist.enabled:
            for name in self.nets:
                ddp.broadcast_buffers(getattr(self.strategy, name))
        return self.last_metrics

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
                        out = self.strategy.loss(phase.name, batch, ctx)
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
        self.strategy.after_step(ctx)
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

    def _end_epoch(self, epoch: int, logger: MetricsLogger | None) -> None:
        tc = self.config.train
        last = epoch == tc.epochs - 1
        validate = self.hooks and ((tc.val_every and (epoch + 1) % tc.val_every == 0) or last)
        metrics: dict[str, float] = {}
        oracle = False
        if validate and self.dist.is_main:
            self.strategy.eval()
            for hook in self.hooks:
                values = hook(self.strategy.model, self.device)
                metrics.update(values)
                if tc.select_by in values:
                    oracle = bool(hook.oracle)
            self.strategy.train()
            self.last_metrics = metrics
            logger.log({"step": self.step, "epoch": epoch, **metrics})
        if self.dist.is_main:
            meta = self._meta(epoch + 1, metrics)
            save_model(self.state_dir / "last", self.strategy.model, meta)
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
                    save_model(self.state_dir / "best", self.strategy.model, meta)
        self._save_state(epoch + 1)

    def _meta(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "classes": self.strategy.classes,
            "config": config_to_dict(self.config),
            "strategy": self.config.train.strategy,
            "step": self.step,
            "epoch": epoch,
            "metrics": metrics,
        }

    # ------------------------------------------------------------------------------ state

    def _save_state(self, epoch: int) -> None:
        if not self.dist.is_main:
            ddp.barrier()
            return
        tensors: dict[str, torch.Tensor] = {}
        for name, module in self.strategy.state_modules().items():
            for k, v in module.state_dict().items():
                tensors[f"module/{name}/{k}"] = v
        phases = {}
        for phase in self.phases:
            sd = self.optimizers[phase.name].state_dict()
            scalars: dict[str, dict[str, Any]] = {}
            for pid, entries in sd["state"].items():
                for k, v in entries.items():
                    if isinstance(v, torch.Tensor):
                        tensors[f"optim/{phase.name}/{pid}/{k}"] = v
                    else:
                        scalars.setdefault(str(pid), {})[k] = v
            phases[phase.name] = {
                "param_groups": sd["param_groups"],
                "state_scalars": scalars,
                "scheduler": self.schedulers[phase.name].state_dict(),
                "scaler": self.scalers[phase.name].state_dict(),
            }
        tensors["rng/torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng/cuda/{i}"] = s
        np_state = np.random.get_state()
        tensors["rng/numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
        py_state = random.getstate()
        info = {
            "step": self.step,
            "epoch": epoch,
            "total_steps": self.total_steps,
            "world_size": self.dist.world_size,
            "best": self.best,
            "last_metrics": self.last_metrics,
            "phases": phases,
            "rng": {
                "python": [py_state[0], list(py_state[1]), py_state[2]],
                "numpy": [np_state[0], *[_plain(x) for x in np_state[2:]]],
            },
            "strategy": self.strategy.extra_state(),
            "config": config_to_dict(self.config),
        }
        save_state_file(self.state_dir, tensors, info)
        ddp.barrier()

    def _load_state(self) -> None:
        loaded = load_state_file(self.state_dir)
        if loaded is None:
            raise ConfigError(f"nothing to resume: {self.state_dir / 'state.json'} does not exist")
        tensors, info = loaded
        _check_resumable(info["config"], config_to_dict(self.config), self.state_dir)
        if info["world_size"] != self.dist.world_size:
            raise ConfigError(
                f"the run was trained with {info['world_size']} processes; resume it with the same "
                f"number (now {self.dist.world_size})"
            )
        for name, module in self.strategy.state_modules().items():
            prefix = f"module/{name}/"
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            module.load_state_dict(state, strict=True)
        for phase in self.phases:
            saved = info["phases"][phase.name]
            state: dict[int, dict[str, Any]] = defaultdict(dict)
            prefix = f"optim/{phase.name}/"
            for k, v in tensors.items():
                if k.startswith(prefix):
                    pid, key = k[len(prefix) :].split("/", 1)
                    state[int(pid)][key] = v
            for pid, entries in saved["state_scalars"].items():
                state[int(pid)].update(entries)
            groups = [
                {k: tuple(v) if k == "betas" else v for k, v in g.items()}
                for g in saved["param_groups"]
            ]
            self.optimizers[phase.name].load_state_dict(
                {"state": dict(state), "param_groups": groups}
            )
            self.schedulers[phase.name].load_state_dict(saved["scheduler"])
            if saved["scaler"]:
                self.scalers[phase.name].load_state_dict(saved["scaler"])
        torch.set_rng_state(tensors["rng/torch"])
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda/")]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states)
        py = info["rng"]["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        npi = info["rng"]["numpy"]
        np.random.set_state((npi[0], tensors["rng/numpy"].numpy().astype(np.uint32), *npi[1:]))
        self.strategy.load_extra_state(info["strategy"])
        self.step = int(info["step"])
        self.best = info["best"]
        self.last_metrics = info.get("last_metrics", {})


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _check_train_config(config: Config) -> None:
    tc = config.train
    for name in ("epochs", "batch_size", "accumulate", "log_every"):
        if getattr(tc, name) < 1:
            raise ConfigError(f"train.{name} must be at least 1, got {getattr(tc, name)}")
    if tc.lr <= 0:
        raise ConfigError(f"train.lr must be positive, got {tc.lr}")
    if not 0 <= tc.label_smoothing < 1:
        raise ConfigError(f"train.label_smoothing must be in [0, 1), got {tc.label_smoothing}")


def _check_phases(strategy: Strategy, phases: list[Phase]) -> None:
    names = [p.name for p in phases]
    if not phases or len(set(names)) != len(names):
        raise ValueError(f"{type(strategy).__name__}.phases() must return uniquely named phases")
    for p in phases:
        if not isinstance(getattr(strategy, p.module, None), nn.Module) or p.every < 1:
            raise ValueError(f"phase {p.name!r}: no submodule {p.module!r} or every < 1")


def _check_resumable(saved: dict, current: dict, where: Path) -> None:
    # Only the result-neutral settings (declared on the Config fields) may change.
    diffs = [
        f"{key}: {a!r} → {b!r}"
        for key, a, b in diff_settings(saved, current, ignore=neutral_keys(Config))
    ]
    if diffs:
        raise ConfigError(
            f"cannot resume {where}: the configuration changed ({'; '.join(diffs[:5])})"
        )


def train(
    config: Config,
    run_dir: str | Path,
    resume: bool = False,
    dataset: SegmentationDataset | None = None,
    val_dataset: SegmentationDataset | None = None,
    hooks: Sequence[ValidationHook] | None = None,
    progress: bool = True,
) -> Path:
    """Train a classifier as ``config`` says and return its ``last.safetensors``.

    Datasets default to ``config.data`` read with :func:`wsss.data.datasets.build_dataset`;
    the classification hook validates on ``data.val_split`` unless ``hooks`` are given.
    """
    dc = config.data
    if dataset is None:
        dataset = _build_dataset(config, dc.split)
    if hooks is None:
        hooks = []
        if val_dataset is None and dc.val_split and config.train.val_every:
            val_dataset = _build_dataset(config, dc.val_split)
        if val_dataset is not None and len(val_dataset):
            hooks.append(
                ClassificationValidation(
                    val_dataset, dc.crop_size, config.train.batch_size, progress=progress
                )
            )
    trainer = Trainer(config, run_dir, dataset, hooks, resume=resume, progress=progress)
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
