"""Mask files: one palette PNG per image (VOC colours, 255 = ignore), and their folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.errors import DataError
from wsss.io.atomic import atomic_path
from wsss.io.maps import check_sample_id
from wsss.io.records import RecordedFolder

__all__ = ["MaskStore", "save_mask_png", "voc_palette"]


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: ``n×3`` ``uint8`` (index 255 is the boundary colour)."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def save_mask_png(
    path: str | os.PathLike, mask: np.ndarray, palette: np.ndarray | None = None
) -> None:
    """Write an ``H×W`` index mask as a palette PNG (VOC colours by default), atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"mask values must lie in 0..255, got [{mask.min()}, {mask.max()}]")
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    palette = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    img.putpalette(palette.reshape(-1).tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


class MaskStore(RecordedFolder):
    """A folder of ``<id>.png`` index masks (segmentation ids, 255 = ignore).

    Like :class:`~wsss.io.maps.MapStore`, it may hold a settings record (``masks.json``,
    see :class:`~wsss.io.records.RecordedFolder`); writing one is up to the stage that fills it.

    Args:
        root: The folder (created on the first write).
    """

    suffix = ".png"
    manifest_name = "masks.json"
    kind = "mask"

    def path(self, sample_id: str) -> Path:
        """The file of ``sample_id`` (which must be a plain name)."""
        return self.root / f"{check_sample_id(sample_id)}{self.suffix}"

    def has(self, sample_id: str) -> bool:
        """Whether ``sample_id`` has a readable mask file."""
        try:
            with Image.open(self.path(sample_id)) as img:
                img.verify()
            return True
        except Exception:  # missing or truncated: recompute it
            return False

    def save(self, sample_id: str, mask: np.ndarray) -> None:
        save_mask_png(self.path(sample_id), mask)

    def load(self, sample_id: str) -> np.ndarray:
        """The mask of ``sample_id`` as ``H×W`` ``uint8`` indices."""
        path = self.path(sample_id)
        try:
            with Image.open(path) as img:
                if img.mode not in ("P", "L"):
                    raise DataError(f"{path}: expected a palette or gray PNG, got {img.mode}")
                return np.asarray(img, dtype=np.uint8).copy()
        except FileNotFoundError:
            raise DataError(
                f"{path}: mask file not found", path=path, kind="missing mask"
            ) from None
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{path}: unreadable mask ({e})", path=path) from e
