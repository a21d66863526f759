"""A picture of a few synthetic images beside their masks and part annotations."""

from __future__ import annotations

import os

import numpy as np

from wsss.data.base import voc_palette
from wsss.data.image_io import write_image
from wsss.data.synthetic.config import SynthConfig
from wsss.data.synthetic.generate import part_palette
from wsss.data.synthetic.scene import render_sample


def preview_grid(
    config: SynthConfig, count: int = 8, columns: int = 2, split: str = "train", gap: int = 4
) -> np.ndarray:
    """Tile image | mask | parts of the first ``count`` images of ``split`` (RGB ``uint8``).

    Each image sits on a white ``size_max``-square cell, so different sizes stay visible.
    """
    cell = config.size_max
    masks, parts = voc_palette(), part_palette()
    rows = -(-count // columns)
    height = rows * (cell + gap) - gap
    width = columns * (3 * (cell + gap) + 2 * gap) - 3 * gap
    grid = np.full((height, width, 3), 255, np.uint8)
    for i in range(count):
        s = render_sample(config, split, i)
        h, w = s.mask.shape
        y = (i // columns) * (cell + gap)
        x = (i % columns) * (3 * (cell + gap) + 2 * gap)
        for j, panel in enumerate((s.image, masks[s.mask], parts[s.parts])):
            grid[y : y + h, x + j * (cell + gap) : x + j * (cell + gap) + w] = panel
    return grid


def save_preview(path: str | os.PathLike, config: SynthConfig, count: int = 8) -> None:
    """Write :func:`preview_grid` to ``path`` (PNG), atomically."""
    write_image(path, preview_grid(config, count))
