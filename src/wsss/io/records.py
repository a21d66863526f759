"""Folders of per-image files that record the settings that made them.

A :class:`RecordedFolder` holds one ``<id><suffix>`` file per image and a JSON settings record
(``manifest_name``). The record is written before the first file (:meth:`~RecordedFolder.claim`),
so a rerun with other settings is refused instead of mixing outputs, and marked complete at the
end (:meth:`~RecordedFolder.finish`). :class:`~wsss.io.maps.MapStore` (class maps,
``maps.json``) and :class:`~wsss.io.masks.MaskStore` (masks, ``masks.json``) are such folders.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from wsss.errors import ConfigError, DataError
from wsss.io.atomic import atomic_write_json

__all__ = ["RecordedFolder", "SettingsEqual", "same_setting"]

SettingsEqual = Callable[[str, Any, Any], bool]


def same_setting(key: str, old: Any, new: Any) -> bool:
    """Equality of one recorded setting; checkpoint paths are compared resolved."""
    if key.endswith("checkpoint") and isinstance(old, str) and isinstance(new, str):
        return Path(old).resolve() == Path(new).resolve()  # the same file named another way
    return old == new


class RecordedFolder:
    """A folder of ``<id><suffix>`` files and their settings record.

    Subclasses set ``suffix``, ``manifest_name`` and ``kind`` (a word for messages, e.g.
    ``"map"``) and add ``path``/``has``/``save``/``load``.

    Args:
        root: The folder (created on the first write).
    """

    suffix: ClassVar[str] = ""
    manifest_name: ClassVar[str] = "record.json"
    kind: ClassVar[str] = "output"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise DataError(f"{self.root}: expected a folder of {self.kind} files, found a file")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    @property
    def manifest_path(self) -> Path:
        return self.root / self.manifest_name

    def ids(self) -> list[str]:
        """Ids of the files present, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.stem for p in self.root.glob(f"*{self.suffix}") if not p.name.startswith(".")
        )

    def manifest(self) -> dict[str, Any] | None:
        """The settings record, or None when there is none."""
        if not self.manifest_path.is_file():
            return None
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(
                f"{self.manifest_path}: unreadable settings record ({e}); delete the folder or "
                "rerun with --restart"
            ) from e

    def is_complete(self) -> bool:
        """Whether the record says every image of the split has its file."""
        record = self.manifest()
        return bool(record) and record.get("complete", True) is True

    def claim(
        self,
        settings: Mapping[str, Any],
        restart: bool = False,
        same: SettingsEqual = same_setting,
    ) -> None:
        """Record ``settings`` before any file is written; refuse a folder made otherwise.

        Args:
            settings: What determines the files (method, checkpoint, scales, split, ...).
            restart: Delete files made with other settings instead of refusing.
            same: Equality of one setting (default: paths compared resolved).

        Raises:
            ConfigError: The folder holds files made with other settings, or files without a
                settings record, and ``restart`` is false.
        """
        record = self.manifest()
        problem = None
        if record is not None:
            changed = [k for k in settings if k in record and not same(k, record[k], settings[k])]
            if changed:
                problem = (
                    f"holds {self.kind}s made with other settings ("
                    + ", ".join(f"{k}: {record[k]!r} → {settings[k]!r}" for k in changed)
                    + ")"
                )
        elif self.ids():
            problem = (
                f"holds {len(self.ids())} {self.kind} files but no settings record "
                f"({self.manifest_name})"
            )
        if problem is not None:
            if not restart:
                raise ConfigError(
                    f"{self.root} {problem}; choose another output folder, delete it, or "
                    "rerun with --restart to start over"
                )
            self.clear()
            record = None
        kept = {k: v for k, v in (record or {}).items() if k not in settings}
        atomic_write_json(self.manifest_path, {**kept, **dict(settings), "complete": False})

    def finish(self, count: int) -> None:
        """Mark the folder complete (``count`` images)."""
        record = self.manifest() or {}
        atomic_write_json(self.manifest_path, {**record, "count": int(count), "complete": True})

    def clear(self) -> None:
        """Delete every file of this kind and the settings record (the folder itself stays)."""
        if not self.root.is_dir():
            return
        for p in self.root.iterdir():
            if (p.is_file() and p.suffix == self.suffix) or p.name == self.manifest_name:
                p.unlink()
            elif p.is_dir() and p.name.startswith("."):
                shutil.rmtree(p)
