"""Multi-process training with ``torch.distributed``, started by ``torchrun``.

When ``torchrun`` (or any launcher) sets ``WORLD_SIZE`` > 1, :func:`init_distributed` joins the
process group (NCCL on CUDA, gloo on CPU); otherwise everything is a single-process no-op, so
the same command runs both ways.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from wsss.errors import WsssError

__all__ = [
    "DistInfo",
    "barrier",
    "broadcast_buffers",
    "cleanup",
    "dist_info",
    "init_distributed",
    "no_sync",
    "raise_if_any_failed",
    "run_sharded",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.rank == 0


def dist_info() -> DistInfo:
    """The current process group's layout (single process when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
        )
    return DistInfo()


def init_distributed(timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group when launched with ``WORLD_SIZE`` > 1 (idempotent)."""
    if dist.is_available() and dist.is_initialized():
        return dist_info()
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1 or not dist.is_available():
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return dist_info()


def cleanup() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel (unchanged when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


@contextlib.contextmanager
def no_sync(modules: Iterable[nn.Module], enabled: bool = True) -> Iterator[None]:
    """Skip DDP gradient synchronisation on ``modules`` (for non-final accumulation steps)."""
    with contextlib.ExitStack() as stack:
        if enabled:
            for m in modules:
                if isinstance(m, nn.parallel.DistributedDataParallel):
                    stack.enter_context(m.no_sync())
        yield


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s buffers (e.g. BatchNorm statistics) to every process."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buf in module.buffers():
        dist.broadcast(buf, src)


def raise_if_any_failed(
    error: BaseException | None,
    enabled: bool,
    message: str = "another process failed (see its message)",
) -> None:
    """Raise ``error`` on this rank, and a :class:`WsssError` on the others, if any rank has one.

    A collective: with ``enabled`` every rank must call it, so that a rank that fails (a
    refused output folder, a bad file) stops all of them instead of leaving the others waiting
    at the next barrier. Without ``enabled`` it just raises ``error`` when there is one.
    """
    if not enabled:
        if error is not None:
            raise error
        return
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    failed = torch.tensor([0 if error is None else 1], device=device)
    dist.all_reduce(failed)
    if error is not None:
        raise error
    if failed.item():
        raise WsssError(message)


def run_sharded(
    ids: Sequence[str],
    prepare: Callable[[], None],
    work: Callable[[list[str]], None],
) -> bool:
    """Run ``work`` on this process's share of ``ids`` (every ``world_size``-th id, from its
    rank on) under ``torchrun``, on all of them otherwise; return whether this is rank 0.

    ``prepare`` (e.g. claiming the output folder) runs on rank 0 before any rank starts; a
    failure on any rank stops every rank. Every rank returns only when all have finished, so
    rank 0 can then complete the output and score it.
    """
    info = dist_info()
    error: BaseException | None = None
    if info.is_main:
        try:
            prepare()
        except Exception as e:  # every rank stops, none waits for the others forever
            error = e
    raise_if_any_failed(error, info.enabled, "another process failed to start")
    try:
        work(list(ids)[info.rank :: info.world_size])
    except Exception as e:
        error = e
    raise_if_any_failed(error, info.enabled, "another process failed")
    return info.is_main
