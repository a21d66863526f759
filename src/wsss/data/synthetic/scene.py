"""One synthetic image: sample a scene from its seed, then rasterise image, mask and parts.

A scene holds 1-3 objects. An object is a small head (saturated class colour and class symbol,
the discriminative part) at the tip of a long, bent body (a texture shared by a pair of classes
plus a faint class tint). Heads are placed first, never overlap and are drawn last, so every
labelled object keeps its head visible; bodies drawn later occlude earlier ones. Context classes
often sit on their own background texture, which also appears without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wsss.data import parts as P
from wsss.data.base import IGNORE_INDEX
from wsss.data.synthetic import appearance
from wsss.data.synthetic.config import SynthConfig

SPLITS = ("train", "val")
_PATH_POINTS = 9  # samples of the body's centre line (a quadratic Bézier curve)
_PLACEMENT_TRIES = 40


@dataclass
class SynthObject:
    """One object of a scene and, once rendered, its visible pixel counts.

    Attributes:
        cls: Class index (classification space).
        head: Head centre ``(y, x)``.
        head_radius: Head radius.
        path: ``N×2`` centre line of the body, ``(y, x)``, starting at the head centre.
        width: Widest body width.
        head_px, near_px, far_px: Visible head / near-body / far-body pixels (ignore band
            excluded).
        area_px: Every pixel of the object, ignore band included.
        reach: Largest distance from the head's rim to a visible body pixel.
        box: Visible extent ``(x0, y0, x1, y1)``, 0-based, inclusive.
    """

    cls: int
    head: tuple[float, float]
    head_radius: float
    path: np.ndarray
    width: float
    head_px: int = 0
    near_px: int = 0
    far_px: int = 0
    area_px: int = 0
    reach: float = 0.0
    box: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass
class SynthSample:
    """A rendered synthetic image.

    Attributes:
        id: Sample id, ``{split}_{index:06d}``.
        image: RGB ``H×W×3`` ``uint8``.
        mask: Segmentation mask ``H×W`` ``uint8`` (0 bg, 1..C, 255 boundary band).
        parts: Part codes ``H×W`` ``uint8`` (``wsss.data.parts``).
        instances: ``H×W`` ``int32``: 0 background, ``i`` where ``objects[i - 1]`` shows.
        objects: The objects, in drawing order of their bodies.
        context: Context class index → whether its texture was drawn.
    """

    id: str
    image: np.ndarray
    mask: np.ndarray
    parts: np.ndarray
    instances: np.ndarray
    objects: list[SynthObject]
    context: dict[int, bool] = field(default_factory=dict)

    @property
    def labels(self) -> list[int]:
        """Sorted class indices present in the image."""
        return sorted({o.cls for o in self.objects})


def sample_id(split: str, index: int) -> str:
    """The file stem of image ``index`` of ``split``."""
    return f"{split}_{index:06d}"


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image, independent of every other image's."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def partner(cls: int, num_classes: int) -> int | None:
    """The class that preferentially co-occurs with ``cls``: pairs 1-2, 3-4, ..., (C-1)-0."""
    other = cls + 1 if cls % 2 else cls - 1
    if num_classes % 2 == 0:
        other %= num_classes
    return other if 0 <= other < num_classes and other != cls else None


def render_sample(config: SynthConfig, split: str, index: int) -> SynthSample:
    """Render image ``index`` of ``split``; a pure function of ``(config, split, index)``."""
    rng = image_rng(config.seed, split, index)
    h, w = (int(v) for v in rng.integers(config.size_min, config.size_max + 1, size=2))
    objects = _place_objects(rng, config, _sample_classes(rng, config), h, w)
    present = {o.cls for o in objects}
    context = {
        k: bool(
            rng.random() < (config.context_rate if k in present else config.context_absent_rate)
        )
        for k in config.context_classes
    }

    image = appearance.background(rng, h, w)
    ctx_map = np.full((h, w), -1, np.int16)
    for j, k in enumerate(config.context_classes):
        if context[k]:
            anchor = next((_midpoint(o) for o in objects if o.cls == k), None)
            region = _context_region(rng, config, h, w, anchor)
            image[region] = appearance.context_texture(j, rng, h, w)[region]
            ctx_map[region] = k

    colours = appearance.class_colours(config.num_classes)
    inst = np.zeros((h, w), np.int32)
    for i, obj in enumerate(objects):
        _draw_body(rng, config, image, inst, i + 1, obj, colours[obj.cls])
    head_mask = np.zeros((h, w), bool)
    for i, obj in enumerate(objects):
        _draw_head(rng, image, inst, head_mask, i + 1, obj, colours[obj.cls])

    band = _boundary(inst, config.ignore_width)
    parts = _part_codes(config, objects, inst, head_mask, ctx_map, present, band)
    mask = np.asarray([0] + [o.cls + 1 for o in objects], np.uint8)[inst]
    mask[band] = IGNORE_INDEX
    _count_pixels(objects, inst, parts)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return SynthSample(sample_id(split, index), pixels, mask, parts, inst, objects, context)


def _sample_classes(rng: np.random.Generator, config: SynthConfig) -> list[int]:
    k = config.num_classes
    weights = np.asarray(config.class_weights or [1.0] * k, np.float64)
    weights /= weights.sum()
    counts = np.asarray(config.objects_probs, np.float64)
    n = int(rng.choice(len(counts), p=counts / counts.sum())) + 1
    first = int(rng.choice(k, p=weights))
    classes = [first]
    mate = partner(first, k)
    for _ in range(n - 1):
        if mate is not None and rng.random() < config.cooccurrence:
            classes.append(mate)
        else:
            classes.append(int(rng.choice(k, p=weights)))
    return classes


def _bezier(length: float, angle: float, bend: float) -> np.ndarray:
    direction = np.array([np.sin(angle), np.cos(angle)])
    normal = np.array([-direction[1], direction[0]])
    end = length * direction
    control = 0.5 * end + bend * length * normal
    t = np.linspace(0.0, 1.0, _PATH_POINTS)[:, None]
    return 2 * (1 - t) * t * control + t**2 * end


def _place_objects(
    rng: np.random.Generator, config: SynthConfig, classes: list[int], h: int, w: int
) -> list[SynthObject]:
    """Heads inside the image and apart; bodies shortened until they fit; misfits dropped."""
    gap = 2 * config.ignore_width + 3
    objects: list[SynthObject] = []
    for cls in classes:
        for _ in range(_PLACEMENT_TRIES):
            radius = rng.uniform(*config.head_size) / 2
            scale = config.class_scales[cls] if config.class_scales else 1.0
            width = scale * rng.uniform(*config.body_width)
            length = scale * rng.uniform(*config.body_length)
            angle = rng.uniform(0.0, 2 * np.pi)
            bend = rng.uniform(-config.body_bend, config.body_bend)
            feasible = None
            while feasible is None and length >= 0.6 * scale * config.body_length[0]:
                rel = _bezier(length, angle, bend)
                lo = np.maximum(radius + 1, 0.4 * width - rel.min(axis=0))
                hi = np.array([h, w]) - np.maximum(radius + 1, 0.4 * width + rel.max(axis=0))
                if np.all(lo <= hi):
                    feasible = (lo, hi)
                else:
                    length *= 0.85
            if feasible is None:
                continue
            head = rng.uniform(*feasible)
            if all(np.hypot(*(head - o.head)) >= radius + o.head_radius + gap for o in objects):
                path = head + _bezier(length, angle, bend)
                objects.append(SynthObject(cls, tuple(head), radius, path, width))
                break
    return objects


def _midpoint(obj: SynthObject) -> np.ndarray:
    return obj.path[len(obj.path) // 2]


def _context_region(
    rng: np.random.Generator, config: SynthConfig, h: int, w: int, anchor: np.ndarray | None
) -> np.ndarray:
    """A half-plane covering ``context_area`` of the image, containing ``anchor`` if given."""
    centre = np.array([h / 2, w / 2])
    if anchor is None:
        angle = rng.uniform(0.0, 2 * np.pi)
    else:  # point the half-plane towards the object, then make sure it reaches it
        toward = anchor - centre
        angle = np.arctan2(toward[0], toward[1]) + rng.uniform(-1.0, 1.0)
    yy, xx = np.mgrid[0:h, 0:w]
    proj = (yy - centre[0]) * np.sin(angle) + (xx - centre[1]) * np.cos(angle)
    threshold = np.quantile(proj, 1.0 - rng.uniform(*config.context_area))
    if anchor is not None:
        a = (anchor[0] - centre[0]) * np.sin(angle) + (anchor[1] - centre[1]) * np.cos(angle)
        threshold = min(threshold, a - 4.0)
    return proj >= threshold


def _object_window(obj: SynthObject, h: int, w: int) -> tuple[slice, slice]:
    pad = max(obj.width, 2 * obj.head_radius) / 2 + 2
    y0, x0 = np.floor(obj.path.min(axis=0) - pad).astype(int)
    y1, x1 = np.ceil(obj.path.max(axis=0) + pad).astype(int) + 1
    return slice(max(y0, 0), min(y1, h)), slice(max(x0, 0), min(x1, w))


def _draw_body(
    rng: np.random.Generator,
    config: SynthConfig,
    image: np.ndarray,
    inst: np.ndarray,
    instance: int,
    obj: SynthObject,
    colour: np.ndarray,
) -> None:
    ys, xs = _object_window(obj, *inst.shape)
    yy, xx = np.mgrid[ys, xs]
    pix = np.stack([yy, xx], axis=-1).astype(np.float64)[..., None, :]  # h×w×1×2
    a, b = obj.path[:-1], obj.path[1:]
    seg = b - a
    seg_len = np.hypot(seg[:, 0], seg[:, 1])
    rel = pix - a  # h×w×S×2
    t = np.clip((rel * seg).sum(-1) / seg_len**2, 0.0, 1.0)
    offset = rel - t[..., None] * seg
    dist = np.hypot(offset[..., 0], offset[..., 1])
    nearest = dist.argmin(-1)[..., None]
    dist = np.take_along_axis(dist, nearest, -1)[..., 0]
    t = np.take_along_axis(t, nearest, -1)[..., 0]
    nearest = nearest[..., 0]
    u = np.concatenate([[0.0], np.cumsum(seg_len)])[nearest] + t * seg_len[nearest]
    cross = seg[nearest, 1] * (yy - a[nearest, 0]) - seg[nearest, 0] * (xx - a[nearest, 1])
    v = cross / seg_len[nearest]

    s = u / seg_len.sum()
    half = obj.width / 2 * (0.85 + 0.15 * np.sin(np.pi * s)) * (1.0 - 0.4 * s**2)
    inside = dist <= half
    if not inside.any():
        return
    texture = appearance.body_texture(obj.cls // 2, u, v, rng.uniform(0, 2 * np.pi))
    tone = appearance.BODY_TONE * rng.uniform(0.88, 1.12) + rng.uniform(-6, 6, size=3)
    shade = 1.0 - 0.15 * (v / np.maximum(half, 1e-6)) ** 2
    body = tone * shade[..., None] + (255.0 * config.body_contrast * texture)[..., None]
    body = (1.0 - config.body_tint) * body + config.body_tint * colour
    image[ys, xs][inside] = body[inside]
    inst[ys, xs][inside] = instance


def _draw_head(
    rng: np.random.Generator,
    image: np.ndarray,
    inst: np.ndarray,
    head_mask: np.ndarray,
    instance: int,
    obj: SynthObject,
    colour: np.ndarray,
) -> None:
    (cy, cx), r = obj.head, obj.head_radius
    h, w = inst.shape
    ys = slice(max(int(cy - r) - 1, 0), min(int(cy + r) + 2, h))
    xs = slice(max(int(cx - r) - 1, 0), min(int(cx + r) + 2, w))
    yy, xx = np.mgrid[ys, xs]
    y, x = (yy - cy) / r, (xx - cx) / r
    disc = np.hypot(y, x) <= 1.0
    head = colour + rng.normal(0.0, 3.0, size=(*disc.shape, 3)).astype(np.float32)
    head[appearance.head_symbol(obj.cls, x, y)] = appearance.symbol_colour(colour)
    image[ys, xs][disc] = head[disc]
    inst[ys, xs][disc] = instance
    head_mask[ys, xs][disc] = True


def _part_codes(
    config: SynthConfig,
    objects: list[SynthObject],
    inst: np.ndarray,
    head_mask: np.ndarray,
    ctx_map: np.ndarray,
    present: set[int],
    band: np.ndarray,
) -> np.ndarray:
    parts = np.full(inst.shape, P.OTHER_BACKGROUND, np.uint8)
    if config.context_classes:
        with_class = np.isin(ctx_map, sorted(present))
        parts[(ctx_map >= 0) & with_class] = P.CONTEXT_PRESENT
        parts[(ctx_map >= 0) & ~with_class] = P.CONTEXT_ABSENT
    parts[head_mask] = P.HEAD
    for i, obj in enumerate(objects):
        ys, xs = _object_window(obj, *inst.shape)
        own = inst[ys, xs] == i + 1
        body = own & ~head_mask[ys, xs] & ~band[ys, xs]
        yy, xx = np.mgrid[ys, xs]
        gap = np.hypot(yy - obj.head[0], xx - obj.head[1]) - obj.head_radius
        parts[ys, xs][body] = np.where(gap[body] <= config.near_distance, P.BODY_NEAR, P.BODY_FAR)
        obj.reach = float(gap[body].max(initial=0.0))
        rows, cols = np.flatnonzero(own.any(1)), np.flatnonzero(own.any(0))
        obj.box = (
            xs.start + int(cols[0]),
            ys.start + int(rows[0]),
            xs.start + int(cols[-1]),
            ys.start + int(rows[-1]),
        )
    parts[band] = P.IGNORE
    return parts


def _boundary(inst: np.ndarray, width: int) -> np.ndarray:
    """Pixels with a different instance (or background) within ``width`` px (chessboard)."""
    band = np.zeros(inst.shape, bool)
    if width == 0:
        return band
    h, w = inst.shape
    padded = np.pad(inst, width, mode="edge")
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            if dy or dx:
                band |= padded[width + dy : width + dy + h, width + dx : width + dx + w] != inst
    return band


def _count_pixels(objects: list[SynthObject], inst: np.ndarray, parts: np.ndarray) -> None:
    counts = np.bincount((inst * 256 + parts).ravel(), minlength=(len(objects) + 1) * 256)
    counts = counts.reshape(-1, 256)
    for i, obj in enumerate(objects, start=1):
        obj.head_px = int(counts[i, P.HEAD])
        obj.near_px = int(counts[i, P.BODY_NEAR])
        obj.far_px = int(counts[i, P.BODY_FAR])
        obj.area_px = int(counts[i].sum())
