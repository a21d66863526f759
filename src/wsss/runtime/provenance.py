"""What produced a run: library versions, platform, seeds, command line (``run_info.json``)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wsss.io.atomic import atomic_write_json

__all__ = ["library_versions", "now", "write_run_info"]

_VERSIONED_PACKAGES = (
    "wsss",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "safetensors",
    "pillow",
    "matplotlib",
)


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that affect results."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_run_info(
    folder: str | os.PathLike,
    seeds: Mapping[str, int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``run_info.json`` into ``folder``: the one provenance record of every run.

    Keys: ``versions``, ``platform``, ``command`` (this process's argv), ``seeds``,
    ``written`` and whatever ``extra`` adds (e.g. ``world_size``, ``device``).
    """
    path = Path(folder) / "run_info.json"
    info = {
        "versions": library_versions(),
        "platform": platform.platform(),
        "command": list(sys.argv),
        "seeds": {k: int(v) for k, v in (seeds or {}).items()},
        "written": now(),
        **dict(extra or {}),
    }
    atomic_write_json(path, info)
    return path
