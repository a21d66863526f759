"""Class-map files: one ``<id>.npz`` per image (numpy, no pickle).

Keys: ``keys`` (segmentation ids of the stored channels, present classes only, no background
channel), ``cam`` (stride-4 maps, ``K×h4×w4``), ``hr`` (full resolution, ``K×H×W``). Values in
[0, 1], each channel max-normalised. Saliency maps use the same format with one channel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss.errors import DataError
from wsss.utils.io import atomic_path


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


def save_class_maps(path: str | os.PathLike, maps: ClassMaps) -> None:
    """Write ``maps`` to ``path`` (``.npz``) atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, keys=maps.keys, cam=maps.cam, hr=maps.hr)


def load_class_maps(path: str | os.PathLike) -> ClassMaps:
    """Read a class-map file written by :func:`save_class_maps` (never unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class-map file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"keys", "cam", "hr"} - set(z.files)
            if missing:
                raise DataError(f"{path}: class-map file lacks {sorted(missing)}")
            return ClassMaps(keys=z["keys"], cam=z["cam"], hr=z["hr"])
    except DataError:
        raise
    except Exception as e:  # zipfile/pickle/shape errors from a damaged file
        raise DataError(f"{path}: unreadable class-map file ({e})") from e
