"""The resumable training state: what the engine saves to continue a run bit for bit.

The state is every module of :meth:`~wsss.train.tasks.base.Task.state_modules`, each phase's
optimiser, schedule and gradient scaler, the RNG states of python, numpy and torch (CPU and
CUDA), the step, the best checkpoint so far, the task's extra state and the configuration.
Tensors go into ``state-<step>.safetensors``, the rest into ``state.json``
(:func:`wsss.io.checkpoints.save_state_file`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from wsss.config import Config, config_to_dict, diff_settings, neutral_keys
from wsss.errors import ConfigError

if TYPE_CHECKING:
    from wsss.train.engine import Trainer

__all__ = ["capture_state", "check_resumable", "restore_state"]


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def capture_state(trainer: Trainer, epoch: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the JSON-serialisable rest of ``trainer``'s state after ``epoch``."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in trainer.task.state_modules().items():
        for k, v in module.state_dict().items():
            tensors[f"module/{name}/{k}"] = v
    phases = {}
    for phase in trainer.phases:
        sd = trainer.optimizers[phase.name].state_dict()
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
            "scheduler": trainer.schedulers[phase.name].state_dict(),
            "scaler": trainer.scalers[phase.name].state_dict(),
        }
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    np_state = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    py_state = random.getstate()
    info = {
        "step": trainer.step,
        "epoch": epoch,
        "total_steps": trainer.total_steps,
        "world_size": trainer.dist.world_size,
        "best": trainer.best,
        "last_metrics": trainer.last_metrics,
        "phases": phases,
        "rng": {
            "python": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy": [np_state[0], *[_plain(x) for x in np_state[2:]]],
        },
        "strategy": trainer.task.extra_state(),
        "config": config_to_dict(trainer.config),
    }
    return tensors, info


def restore_state(
    trainer: Trainer, tensors: dict[str, torch.Tensor], info: dict[str, Any], where: Path
) -> None:
    """Load a state made by :func:`capture_state` into ``trainer`` (checked first).

    Raises:
        ConfigError: The configuration changed in a way that changes the result, or the
            number of processes differs.
    """
    check_resumable(info["config"], trainer.config, where)
    if info["world_size"] != trainer.dist.world_size:
        raise ConfigError(
            f"the run was trained with {info['world_size']} processes; resume it with the same "
            f"number (now {trainer.dist.world_size})"
        )
    for name, module in trainer.task.state_modules().items():
        prefix = f"module/{name}/"
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(state, strict=True)
    for phase in trainer.phases:
        saved = info["phases"][phase.name]
        optim_state: dict[int, dict[str, Any]] = defaultdict(dict)
        prefix = f"optim/{phase.name}/"
        for k, v in tensors.items():
            if k.startswith(prefix):
                pid, key = k[len(prefix) :].split("/", 1)
                optim_state[int(pid)][key] = v
        for pid, entries in saved["state_scalars"].items():
            optim_state[int(pid)].update(entries)
        groups = [
            {k: tuple(v) if k == "betas" else v for k, v in g.items()}
            for g in saved["param_groups"]
        ]
        trainer.optimizers[phase.name].load_state_dict(
            {"state": dict(optim_state), "param_groups": groups}
        )
        trainer.schedulers[phase.name].load_state_dict(saved["scheduler"])
        if saved["scaler"]:
            trainer.scalers[phase.name].load_state_dict(saved["scaler"])
    torch.set_rng_state(tensors["rng/torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda/")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    py = info["rng"]["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npi = info["rng"]["numpy"]
    np.random.set_state((npi[0], tensors["rng/numpy"].numpy().astype(np.uint32), *npi[1:]))
    trainer.task.load_extra_state(info["strategy"])
    trainer.step = int(info["step"])
    trainer.best = info["best"]
    trainer.last_metrics = info.get("last_metrics", {})


def _with_defaults(saved: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``saved`` with the settings it predates filled in from ``defaults`` (recursively)."""
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, Mapping) and isinstance(out[key], Mapping) and value:
            out[key] = _with_defaults(out[key], value)
    return out


def check_resumable(saved: Mapping[str, Any], config: Config, where: Path) -> None:
    """Refuse to resume when a setting that changes the result differs from the saved one.

    Settings added to ``wsss`` after the state was saved count as their defaults, so a run
    saved by an older version resumes when it did not use them.

    Raises:
        ConfigError: Names the first changed settings.
    """
    current = config_to_dict(config)
    saved = _with_defaults(saved, config_to_dict(type(config)()))
    # Only the result-neutral settings (declared on the Config fields) may change.
    diffs = [
        f"{key}: {a!r} → {b!r}"
        for key, a, b in diff_settings(saved, current, ignore=neutral_keys(type(config)))
    ]
    if diffs:
        raise ConfigError(
            f"cannot resume {where}: the configuration changed ({'; '.join(sorted(diffs)[:5])}); "
            f"resume with the saved settings (RUN/config.yaml) or train into another directory"
        )
