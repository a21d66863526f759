"""Class-map files written by the reference code bases, read as :class:`~wsss.io.maps.ClassMaps`.

Formats (``maps_format``):

- ``wsss``: this library's ``<id>.npz`` (no pickle).
- ``irn``: ``<id>.npy`` of IRN's and LPCAM's ``make_cam``/``make_lpcam``: a dict with
  ``keys`` (classification indices 0..C−1 of the stored channels, no background), ``cam``
  (stride-4 maps) and ``high_res`` (full resolution).
- ``puzzle``: ``<id>.npy`` of Puzzle-CAM's and P-NOC's CAM inference: a dict with ``keys``
  (segmentation ids with a leading background 0: ``[0, k₁+1, …]``), ``cam`` and ``hr_cam``.

Those ``.npy`` files are pickled dicts (of numpy arrays and torch tensors). They are read with a
restricted unpickler that only rebuilds numpy arrays, torch tensors (their storage read by
``torch.load(weights_only=True)``) and plain containers, so no code from the file runs; anything
that is not a dict of arrays is refused. Negative values (LPCAM's cosine maps) are clipped to
0, which changes no seed mask at a threshold ≥ 0.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._utils

from wsss.errors import ConfigError, DataError
from wsss.io.maps import ClassMaps, load_class_maps, validate_class_maps

__all__ = ["MAPS_FORMATS", "load_maps", "maps_suffix", "read_pickled_npy"]

MAPS_FORMATS: dict[str, str] = {"wsss": ".npz", "irn": ".npy", "puzzle": ".npy"}


def _storage_from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> torch.Tensor:
    # torch's pickled tensor, without its requires_grad, backward hooks and metadata
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _numpy_global(name: str) -> Any:
    try:
        from numpy._core import multiarray  # numpy ≥ 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return getattr(multiarray, name)


# The only globals a pickled dict of numpy arrays and CPU tensors needs.
_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("collections", "OrderedDict"): lambda: OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): lambda: _rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): lambda: _storage_from_bytes,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    for _name in ("_reconstruct", "scalar"):
        _ALLOWED[(_module, _name)] = lambda name=_name: _numpy_global(name)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return _ALLOWED[(module, name)]()


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def read_pickled_npy(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The dict of arrays in a ``.npy`` written by ``np.save(path, {...})``, without running code.

    Torch tensors in it become numpy arrays.

    Raises:
        DataError: Missing file, not a ``.npy`` of a dict, a value that is not an array or a
            list of numbers, or a pickle that needs anything else (refused, never run).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class-map file not found", path=path, kind="missing maps")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            if dtype != np.dtype(object) or shape != ():
                raise DataError(
                    f"{path}: holds a {dtype} array of shape {shape}, not a dict of maps",
                    path=path,
                    kind="bad maps",
                )
            value = _Unpickler(f).load()
    except DataError:
        raise
    except Exception as e:  # bad magic, truncated file, refused global
        raise DataError(f"{path}: unreadable map file ({e})", path=path, kind="bad maps") from e
    value = value.item() if isinstance(value, np.ndarray) and value.shape == () else value
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise DataError(f"{path}: not a dict of maps", path=path, kind="bad maps")
    out: dict[str, np.ndarray] = {}
    for key, item in value.items():
        item = _to_numpy(item)
        if isinstance(item, list | tuple):
            item = np.asarray([_to_numpy(v) for v in item])
        if not isinstance(item, np.ndarray) or item.dtype == object:
            raise DataError(
                f"{path}: '{key}' is a {type(item).__name__}, not an array",
                path=path,
                kind="bad maps",
            )
        out[key] = item
    return out


def _field(path: Path, data: dict[str, np.ndarray], *names: str) -> np.ndarray:
    for name in names:
        if name in data:
            return data[name]
    raise DataError(
        f"{path}: no '{names[0]}' in the file (it has {sorted(data)}); is --maps-format right?",
        path=path,
        kind="bad maps",
    )


def _as_class_maps(path: Path, keys: np.ndarray, data: dict[str, np.ndarray], hr_name: str):
    if not np.issubdtype(keys.dtype, np.integer) and keys.size:
        raise DataError(f"{path}: 'keys' must be integers", path=path, kind="bad maps")
    hr = _field(path, data, hr_name)
    cam = data.get("cam")
    if cam is None:  # only the full-resolution maps are evaluated
        cam = hr[:, ::4, ::4]
    for name, values in (("cam", cam), (hr_name, hr)):
        if not np.issubdtype(values.dtype, np.floating):
            raise DataError(
                f"{path}: '{name}' has dtype {values.dtype}; maps must be floats",
                path=path,
                kind="bad maps",
            )
    try:
        maps = ClassMaps(keys=keys, cam=np.maximum(cam, 0), hr=np.maximum(hr, 0))
    except ValueError as e:
        raise DataError(f"{path}: {e}", path=path, kind="bad maps") from None
    return maps


def _load_irn(path: Path) -> ClassMaps:
    data = read_pickled_npy(path)
    keys = _field(path, data, "keys").reshape(-1)
    return _as_class_maps(path, keys.astype(np.int64) + 1, data, "high_res")


def _load_puzzle(path: Path) -> ClassMaps:
    data = read_pickled_npy(path)
    keys = _field(path, data, "keys").reshape(-1)
    if keys.size == 0 or int(keys[0]) != 0:
        raise DataError(
            f"{path}: Puzzle-CAM/P-NOC keys start with the background 0, got {keys.tolist()}; "
            "for keys without background use --maps-format irn",
            path=path,
            kind="bad maps",
        )
    return _as_class_maps(path, keys[1:].astype(np.int64), data, "hr_cam")


_LOADERS: dict[str, Callable[[Path], ClassMaps]] = {"irn": _load_irn, "puzzle": _load_puzzle}


def maps_suffix(maps_format: str) -> str:
    """File suffix of a map format (``.npz`` or ``.npy``).

    Raises:
        ConfigError: Unknown format.
    """
    try:
        return MAPS_FORMATS[maps_format]
    except KeyError:
        raise ConfigError(
            f"unknown maps format {maps_format!r}; choose one of {', '.join(MAPS_FORMATS)}"
        ) from None


def load_maps(
    path: str | os.PathLike,
    maps_format: str = "wsss",
    expected_keys: Iterable[int] | None = None,
) -> ClassMaps:
    """Read and validate the class maps of one image in any supported format.

    Args:
        path: The map file.
        maps_format: ``wsss``, ``irn`` or ``puzzle`` (see the module docstring).
        expected_keys: Segmentation ids that must have a channel.

    Raises:
        ConfigError: Unknown format.
        DataError: Missing, unreadable or invalid file, naming it.
    """
    maps_suffix(maps_format)
    if maps_format == "wsss":
        return load_class_maps(path, expected_keys)
    path = Path(path)
    return validate_class_maps(_LOADERS[maps_format](path), path, expected_keys)
