"""Class-map files: one ``<id>.npz`` per image (numpy, no pickle), and the folder that holds them.

Keys: ``keys`` (segmentation ids of the stored channels, present classes only, no background
channel), ``cam`` (stride-4 maps, ``K×h4×w4``), ``hr`` (full resolution, ``K×H×W``). Values in
[0, 1], each channel max-normalised. Saliency maps use the same format with one channel.

A :class:`MapStore` is a folder of such files plus ``maps.json``, the record of the settings
that made them. The record is written before the first map (:meth:`MapStore.claim`), so a rerun
with other settings is refused instead of mixing maps, and marked complete at the end.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss.errors import DataError
from wsss.io.atomic import atomic_path
from wsss.io.records import RecordedFolder


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


class MapStore(RecordedFolder):
    """A folder of ``<id>.npz`` map files and their ``maps.json`` settings record.

    Args:
        root: The folder (created on the first write).
    """

    suffix = ".npz"
    manifest_name = MANIFEST_NAME
    kind = "map"

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
