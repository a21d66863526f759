"""Exclusive use of a training run directory.

Two trainings writing into one run directory would interleave ``metrics.jsonl`` and overwrite
each other's checkpoints. :class:`RunLock` holds an advisory ``fcntl`` lock on
``RUN/.lock`` (the file the pipeline locks too); a second process gets a ``ConfigError`` at
once instead of waiting. The lock dies with its process, so a killed run never leaves a
stale lock behind. On systems without ``fcntl`` (Windows) it is a no-op.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from wsss.errors import ConfigError

__all__ = ["LOCK_NAME", "RunLock"]

LOCK_NAME = ".lock"


class RunLock:
    """A non-blocking exclusive lock on a run directory.

    Args:
        run_dir: The directory (created on :meth:`acquire`).
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock (no-op when already held by this object).

        Raises:
            ConfigError: Another process (or another trainer in this one) holds it.
        """
        if self._file is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise ConfigError(
                f"run directory {self.path.parent} is in use by another training (lock "
                f"{self.path}); wait for it to finish or choose another output directory"
            ) from None
        self._file = f

    def release(self) -> None:
        """Give the lock back (no-op when not held)."""
        if self._file is not None:
            f, self._file = self._file, None
            f.close()  # closing the file drops the flock

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()
