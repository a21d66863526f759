"""Options and helpers shared by the command modules.

Every command with settings takes ``--set KEY=VALUE`` (repeatable), the same dotted keys as the
pipeline configuration (``train.lr=0.01``, ``synth.train=400``, ``lpcam.k=8``); its dedicated
options are shortcuts onto the same fields. A command builds its settings with
:func:`settings`, e.g. ``wsss lpcam fit``::

    config = settings(PrototypeConfig, sets, {"k": k, "tau": tau}, section="lpcam")

Choices are enumerations (``--help`` lists them); ``--workers N`` always means N background
worker processes (0: the work runs in the command's own process).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from wsss.config import load_config
from wsss.errors import ConfigError

__all__ = [
    "ClassSource",
    "DatasetFormat",
    "Strategy",
    "TaskName",
    "check_output_file",
    "escape",
    "resume_command",
    "set_option",
    "settings",
    "workers_option",
]


class DatasetFormat(str, Enum):
    """Dataset readers (``wsss.data.datasets.DATASETS``)."""

    voc = "voc"
    coco = "coco"
    folder = "folder"


class Strategy(str, Enum):
    """Training strategies (``wsss.train.strategies.STRATEGIES``)."""

    vanilla = "vanilla"
    puzzle = "puzzle"
    occse = "occse"
    poc = "poc"
    pnoc = "pnoc"


class TaskName(str, Enum):
    """Training tasks (``wsss.train.tasks.TASKS``)."""

    cam = "cam"
    boundary = "boundary"
    segmentation = "segmentation"
    ccam = "ccam"
    saliency_detector = "saliency_detector"


class ClassSource(str, Enum):
    """Which classes get maps: the labelled ones, or those the classifier predicts."""

    gt = "gt"
    predicted = "predicted"


def set_option(example: str = "train.lr=0.01") -> Any:
    """The ``--set KEY=VALUE`` option (repeatable)."""
    return typer.Option(
        None,
        "--set",
        metavar="KEY=VALUE",
        help=f"Setting override, repeatable; YAML values (e.g. --set {example}).",
    )


def workers_option(
    default: int | None, what: str = "reading the data", sets: str | None = None
) -> Any:
    """The ``--workers N`` option: background worker processes, 0 for none."""
    extra = f" Sets {sets}." if sets else ""
    return typer.Option(
        default,
        "--workers",
        min=0,
        help=f"Background worker processes {what} (0: in this process).{extra}",
    )


def settings(
    cls: type,
    sets: Iterable[str] | None = None,
    shortcuts: Mapping[str, Any] | None = None,
    preset: str | Path | None = None,
    section: str | None = None,
) -> Any:
    """The settings of a command: ``preset``, then the given ``shortcuts``, then ``--set`` items.

    Args:
        cls: The settings dataclass.
        sets: ``KEY=VALUE`` strings of ``--set`` (they win over the shortcuts).
        shortcuts: Dedicated options as ``key → value``; None means "not given".
        preset: Preset name or YAML file (None: the dataclass defaults).
        section: Key prefix also accepted in ``--set`` (``lpcam`` for ``lpcam.k=8``).

    Raises:
        ConfigError: Unknown key or bad value, naming the setting.
    """
    given = [(k, v.value if isinstance(v, Enum) else v) for k, v in (shortcuts or {}).items()]
    given = [(k, v) for k, v in given if v is not None]
    return load_config(preset, [*given, *(sets or [])], cls=cls, section=section)


def resume_command(argv: Sequence[str], add: Sequence[str] = ()) -> str:
    """The command line that resumes ``argv`` (``wsss ...``), with ``add`` options appended."""
    args = list(argv[1:])
    args += [a for a in add if a not in args]
    return shlex.join(["wsss", *args])


def check_output_file(path: Path, option: str) -> None:
    """Refuse an output file that cannot be written, before any work is done.

    Raises:
        ConfigError: ``path`` is a directory, a parent is a file, or the folder that would
            hold it is not writable; the message names ``option``.
    """
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a directory; give a file name")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{option} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{option} {path}: no permission to write there; choose another path")
