"""Class-map files: one ``<id>.npz`` per image (numpy, no pickle), and the folder that holds them.

Keys: ``keys`` (segmentation ids of the stored channels, present classes only, no background
channel), ``cam`` (stride-4 maps, ``K×h4×w4``), ``hr`` (full resolution, ``K×H×W``). Values in
[0, 1], each channel max-normalised. Saliency maps use the same format with one channel.

A :class:`MapStore` is a folder of such files plus ``maps.json``, the record of the settings
that made them. The record is written before the first map (:meth:`MapStore.claim`), so a rerun
with other settings is refused instead of mixing maps, and marked complete at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsss.errors import ConfigError, DataError
from wsss.io.atomic import atomic_path, atomic_write_json


@dataclass
class ClassMaps:
    """Class maps of one image.

    Attributes:
        keys: ``(K,)`` ``int64`` segmentation ids (1..C) of the channels.
        cam: ``K×h4×w4`` ``float32`` stride-4 maps.
        hr: ``K×H×W`` ``float32`` full-resolution maps.
    """

    keys: np.ndarray
    cam: np.ndarray
    hr: np.ndarray

    def __post_init__(self) -> None:
        self.keys = np.asarray(self.keys, dtype=np.int64).reshape(-1)
        self.cam = np.asarray(self.cam, dtype=np.float32)
        self.hr = np.asarray(self.hr, dtype=np.float32)
        k = len(self.keys)
        if self.cam.ndim != 3 or self.hr.ndim != 3:
            raise ValueError(
                f"cam and hr must be K×h×w arrays, got shapes {self.cam.shape} and {self.hr.shape}"
            )
        if self.cam.shape[0] != k or self.hr.shape[0] != k:
            raise ValueError(
                f"{k} keys but cam has {self.cam.shape[0]} and hr {self.hr.shape[0]} channels"
            )


_PLAIN_ID = re.compile(r"^[^/\\\x00]+$")
MANIFEST_NAME = "maps.json"
_TOLERANCE = 1e-4  # float rounding above 1 after max-normalisation


def check_sample_id(sample_id: str) -> str:
    """``sample_id`` if it is a plain file name (no folder part, not ``.``/``..``).

    Raises:
        DataError: The id would name a file outside its folder.
    """
    if not isinstance(sample_id, str) or not _PLAIN_ID.match(sample_id) or sample_id in (".", ".."):
        raise DataError(f"sample id {sample_id!r} is not a plain file name", kind="bad id")
    return sample_id


def validate_class_maps(
    maps: ClassMaps, where: str | os.PathLike, expected_keys: Iterable[int] | None = None
) -> ClassMaps:
    """Check the file conventions; return ``maps``.

    Raises:
        DataError: Non-finite values, values outside [0, 1], duplicate keys, or a class of
            ``expected_keys`` without its channel. The message names ``where``.
    """
    keys = maps.keys.tolist()
    if len(set(keys)) != len(keys):
        raise DataError(f"{where}: duplicate class keys {keys}", kind="bad maps")
    for name in ("cam", "hr"):
        values = getattr(maps, name)
        if values.size == 0:
            continue
        if not np.isfinite(values).all():
            raise DataError(f"{where}: '{name}' holds NaN or infinite values", kind="bad maps")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1 + _TOLERANCE:
            raise DataError(
                f"{where}: '{name}' values must lie in [0, 1], found [{low:.4g}, {high:.4g}]",
                kind="bad maps",
            )
    if expected_keys is not None:
        missing = sorted(set(int(k) for k in expected_keys) - set(keys))
        if missing:
            raise DataError(
                f"{where}: no map for labelled class id(s) {missing} (file has {keys})",
                kind="bad maps",
            )
    return maps


def save_class_maps(path: str | os.PathLike, maps: ClassMaps) -> None:
    """Write ``maps`` to ``path`` (``.npz``) atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, keys=maps.keys, cam=maps.cam, hr=maps.hr)


def load_class_maps(
    path: str | os.PathLike, expected_keys: Iterable[int] | None = None
) -> ClassMaps:
    """Read and validate a class-map file (never unpickles).

    Args:
        path: The ``.npz`` file.
        expected_keys: Segmentation ids that must have a channel (the image's labels).

    Raises:
        DataError: Missing, damaged or invalid file (see :func:`validate_class_maps`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class-map file not found", path=path, kind="missing maps")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"keys", "cam", "hr"} - set(z.files)
            if missing:
                raise DataError(f"{path}: class-map file lacks {sorted(missing)}", path=path)
            arrays = {k: z[k] for k in ("keys", "cam", "hr")}
    except DataError:
        raise
    except Exception as e:  # zipfile/pickle errors from a damaged file
        raise DataError(f"{path}: unreadable class-map file ({e})", path=path) from e
    for name in ("cam", "hr"):
        if not np.issubdtype(arrays[name].dtype, np.floating):
            raise DataError(
                f"{path}: '{name}' has dtype {arrays[name].dtype}; maps must be floats in [0, 1]",
                path=path,
                kind="bad maps",
            )
    if not np.issubdtype(arrays["keys"].dtype, np.integer):
        raise DataError(f"{path}: 'keys' must be integers", path=path, kind="bad maps")
    try:
        maps = ClassMaps(**arrays)
    except ValueError as e:
        raise DataError(f"{path}: {e}", path=path, kind="bad maps") from None
    return validate_class_maps(maps, path, expected_keys)


def is_complete_map_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a readable class-map file (checks the archive index, not the data)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"keys", "cam", "hr"} <= set(z.files)
    except Exception:  # missing, truncated or foreign file: recompute it
        return False


SettingsEqual = Callable[[str, Any, Any], bool]


def _same_setting(key: str, old: Any, new: Any) -> bool:
    if key.endswith("checkpoint") and isinstance(old, str) and isinstance(new, str):
        return Path(old).resolve() == Path(new).resolve()  # the same file named another way
    return old == new


class MapStore:
    """A folder of ``<id>.npz`` map files and their ``maps.json`` settings record.

    Args:
        root: The folder (created on the first write).
    """

    suffix = ".npz"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise DataError(f"{self.root}: expected a folder of map files, found a file")

    def __repr__(self) -> str:
        return f"MapStore({str(self.root)!r})"

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def path(self, sample_id: str) -> Path:
        """The file of ``sample_id`` (which must be a plain name)."""
        return self.root / f"{check_sample_id(sample_id)}{self.suffix}"

    def has(self, sample_id: str) -> bool:
        """Whether ``sample_id`` has a readable file."""
        return is_complete_map_file(self.path(sample_id))

    def save(self, sample_id: str, maps: ClassMaps) -> None:
        save_class_maps(self.path(sample_id), maps)

    def load(self, sample_id: str, expected_keys: Iterable[int] | None = None) -> ClassMaps:
        return load_class_maps(self.path(sample_id), expected_keys)

    def ids(self) -> list[str]:
        """Ids of the map files present, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.stem for p in self.root.glob(f"*{self.suffix}") if not p.name.startswith(".")
        )

    # Settings record ----------------------------------------------------------------------

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
        same: SettingsEqual = _same_setting,
    ) -> None:
        """Record ``settings`` before any map is written; refuse a folder made otherwise.

        Args:
            settings: What determines the maps (method, checkpoint, scales, split, ...).
            restart: Delete maps made with other settings instead of refusing.
            same: Equality of one setting (default: paths compared resolved).

        Raises:
            ConfigError: The folder holds maps made with other settings, or maps without a
                settings record, and ``restart`` is false.
        """
        record = self.manifest()
        problem = None
        if record is not None:
            changed = [k for k in settings if k in record and not same(k, record[k], settings[k])]
            if changed:
                problem = (
                    "holds maps made with other settings ("
                    + ", ".join(f"{k}: {record[k]!r} → {settings[k]!r}" for k in changed)
                    + ")"
                )
        elif self.ids():
            problem = f"holds {len(self.ids())} map files but no settings record ({MANIFEST_NAME})"
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
        """Delete every map file and the settings record (the folder itself stays)."""
        if not self.root.is_dir():
            return
        for p in self.root.iterdir():
            if p.suffix == self.suffix or p.name == MANIFEST_NAME:
                p.unlink()
            elif p.is_dir() and p.name.startswith("."):
                shutil.rmtree(p)
