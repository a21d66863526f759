"""Which device a process computes on."""

from __future__ import annotations

import torch

from wsss.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → this process's GPU when CUDA is available, else the CPU.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a :class:`torch.device`.
        local_rank: This process's index on its node (picks the GPU under ``torchrun``).

    Raises:
        ConfigError: CUDA is asked for but not available, or the name is not a device.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available; use auto or cpu")
    return device
