"""How things look: class colours, head symbols, body textures, backgrounds, context textures.

Every function works on float RGB in 0..255 and draws from the ``numpy`` generator it is given,
so an image is a pure function of its seed.
"""

from __future__ import annotations

import colorsys

import numpy as np

# The neutral tone of every body before texture and tint; backgrounds avoid its brightness.
BODY_TONE = np.array([152.0, 138.0, 118.0], dtype=np.float32)
_BODY_PERIODS = (7.0, 5.0, 8.0, 8.0)  # one per body texture style
_SYMBOL_THICKNESS = 0.24  # in head radii


def class_colours(num_classes: int) -> np.ndarray:
    """Saturated, evenly spaced hues: ``C×3`` float32 (class 0 red, then round the wheel)."""
    hues = np.arange(num_classes) / max(num_classes, 1)
    rgb = [colorsys.hsv_to_rgb(h, 0.9, 0.95) for h in hues]
    return np.asarray(rgb, dtype=np.float32) * 255.0


def head_symbol(cls: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean symbol of class ``cls`` at head coordinates ``x, y`` (units of head radius).

    Symbols are axis-aligned; classes past the 8 shapes reuse them (their hue still differs).
    """
    t = _SYMBOL_THICKNESS
    rho = np.hypot(x, y)
    ax, ay = np.abs(x), np.abs(y)
    kind = cls % 8
    if kind == 0:  # plus
        return ((ax < t) & (ay < 0.7)) | ((ay < t) & (ax < 0.7))
    if kind == 1:  # ring
        return (rho > 0.35) & (rho < 0.35 + 2 * t)
    if kind == 2:  # dot
        return rho < 0.42
    if kind == 3:  # diagonal cross
        return ((np.abs(x - y) < 1.4 * t) | (np.abs(x + y) < 1.4 * t)) & (rho < 0.75)
    if kind == 4:  # horizontal bar
        return (ay < t) & (ax < 0.72)
    if kind == 5:  # square outline
        box = np.maximum(ax, ay)
        return (box > 0.3) & (box < 0.3 + 1.6 * t)
    if kind == 6:  # vertical bar
        return (ax < t) & (ay < 0.72)
    return (ay < 0.6) & (ax < 0.65 * (y + 0.6))  # kind 7: triangle


def symbol_colour(colour: np.ndarray) -> np.ndarray:
    """Near-black on light class colours, near-white on dark ones."""
    luma = float(colour @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
    return np.full(3, 25.0 if luma > 140 else 240.0, dtype=np.float32)


def body_texture(group: int, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Texture in [-1, 1] shared by the body pair ``group`` (= class // 2).

    ``u`` is the arc length from the head along the body, ``v`` the signed distance across it,
    so the pattern follows the body's bend. Groups past 4 reuse the styles at longer periods.
    """
    style = group % 4
    period = _BODY_PERIODS[style] * (1.0 + 0.35 * (group // 4))
    w = 2.0 * np.pi / period
    if style == 0:  # bands across the body
        return np.sin(w * u + phase)
    if style == 1:  # stripes along the body
        return np.sin(w * v + phase)
    if style == 2:  # spots
        return np.clip(1.6 * np.sin(w * u + phase) * np.sin(w * v), -1.0, 1.0)
    return np.sin(w * (u + 1.2 * np.abs(v)) + phase)  # style 3: chevrons


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a random ``cells``-grid, bilinearly upsampled."""
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1)).astype(np.float32)
    gy = np.linspace(0.0, cells, h, dtype=np.float32)
    gx = np.linspace(0.0, cells, w, dtype=np.float32)
    y0 = np.minimum(gy.astype(np.int64), cells - 1)
    x0 = np.minimum(gx.astype(np.int64), cells - 1)
    fy = (gy - y0)[:, None]
    fx = (gx - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A plain, noisy, desaturated background whose brightness stays clear of the bodies'."""
    value = rng.uniform(0.2, 0.42) if rng.random() < 0.5 else rng.uniform(0.72, 0.9)
    base = np.asarray(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.3), value))
    base = base.astype(np.float32) * 255.0
    shade = smooth_noise(rng, h, w, int(rng.integers(2, 6)))
    image = base + 14.0 * shade[..., None]
    return image + rng.normal(0.0, 3.0, size=(h, w, 3)).astype(np.float32)


def context_texture(index: int, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """The background texture linked to the ``index``-th context class, over a full image.

    Index 0 looks like rails on gravel, 1 like water; later ones are coloured gratings.
    The pattern's orientation is random per image.
    """
    angle = rng.uniform(0.0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = xx * np.cos(angle) + yy * np.sin(angle)
    b = -xx * np.sin(angle) + yy * np.cos(angle)
    grain = rng.normal(0.0, 1.0, size=(h, w)).astype(np.float32)
    if index == 0:
        image = np.empty((h, w, 3), np.float32)
        image[:] = np.array([132.0, 120.0, 104.0], np.float32)
        image += 10.0 * grain[..., None]
        track = np.mod(a + rng.uniform(0, 24), 24.0)
        ties = (np.mod(b + rng.uniform(0, 9), 9.0) < 3.5) & (track < 19.0)
        rails = ((track > 3.0) & (track < 5.5)) | ((track > 13.5) & (track < 16.0))
        image[ties] = np.array([92.0, 64.0, 44.0], np.float32) + 6.0 * grain[ties, None]
        image[rails] = np.array([58.0, 60.0, 70.0], np.float32)
        return image
    if index == 1:
        wave = np.sin(2 * np.pi * a / 11.0 + 2.2 * np.sin(2 * np.pi * b / 37.0))
        base = np.array([58.0, 96.0, 138.0], np.float32)
        image = base + (20.0 * wave + 5.0 * grain)[..., None]
        image[wave > 0.93] = np.array([190.0, 210.0, 225.0], np.float32)  # glints
        return image
    hue = (0.13 + 0.37 * index) % 1.0
    colour = np.asarray(colorsys.hsv_to_rgb(hue, 0.35, 0.55), np.float32) * 255.0
    period = 5.0 + 1.5 * (index % 5)
    return colour + (28.0 * np.sin(2 * np.pi * a / period) + 6.0 * grain)[..., None]
