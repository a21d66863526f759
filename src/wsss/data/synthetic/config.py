"""The synthetic benchmark's knobs, with defaults sized for the CPU demo."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wsss.config import config_to_dict, dataclass_from_dict
from wsss.errors import ConfigError

# Names only label the classes; nothing about a class's look depends on its name.
DEFAULT_CLASS_NAMES = (
    "train",
    "snake",
    "boat",
    "eel",
    "lizard",
    "worm",
    "kite",
    "fish",
    "newt",
    "slug",
    "ferret",
    "otter",
)
IMAGE_FORMATS = ("jpg", "png")


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """The first ``num_classes`` default names, then ``class12``, ``class13``, ..."""
    extra = tuple(f"class{i}" for i in range(len(DEFAULT_CLASS_NAMES), num_classes))
    return (DEFAULT_CLASS_NAMES + extra)[:num_classes]


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the synthetic benchmark (see ``docs/synthetic.md``).

    Lengths are in pixels, ranges are inclusive ``(low, high)`` pairs drawn uniformly, rates
    are probabilities. Class ``c``'s body texture is shared with its *body pair*
    (``c ^ 1``: classes 0-1, 2-3, ...); its preferred co-occurring *partner* is the
    neighbouring class of the other parity (1-2, 3-4, ..., last-0), so that a body texture
    and a co-occurrence never point to the same pair.

    The defaults are calibrated so that the demo's vanilla CAM has the papers' CAM seed profile
    on VOC (precision and recall about 65 at threshold 0.3); the ``hard-bodies`` preset keeps
    the earlier setting (``body_tint`` 0.04, ``body_width`` (14, 26), ``head_size`` (10, 20)).

    Attributes:
        seed: Master seed; image ``i`` of split ``s`` draws from ``(seed, s, i)`` only.
        train: Number of training images.
        val: Number of validation images.
        size_min: Smallest image side.
        size_max: Largest image side (height and width are drawn independently).
        num_classes: Number of foreground classes C.
        class_names: Class names; default names when empty.
        class_weights: Relative frequency of each class as an image's first object; uniform
            when empty.
        class_scales: Per-class factor on body length and width (size groups); all 1 when
            empty.
        objects_probs: Probability of 1, 2, 3, ... objects per image.
        cooccurrence: Probability that each object after the first is the partner of the
            first object's class (otherwise drawn by ``class_weights``).
        head_size: Head diameter range.
        body_length: Body length range (clipped to what fits in the image).
        body_width: Body width range (widest point).
        body_bend: Largest sideways bend of the body's centre line, as a fraction of its length.
        body_tint: Share of the class colour blended into the body (the main difficulty knob:
            0 leaves only the texture shared by the body pair).
        body_contrast: Amplitude of the body-pair texture, as a fraction of 255.
        near_distance: Body pixels within this distance of their head are "near", others "far"
            (16 px = 2 feature cells at output stride 8).
        context_classes: Classes linked to a background texture (indices into the classes).
        context_rate: Probability that a context class's texture is drawn when it is present.
        context_absent_rate: Probability that its texture is drawn when the class is absent.
        context_area: Share of the image a context texture covers.
        ignore_width: Width in pixels, on each side of a boundary, of the 255 ignore band.
        image_format: ``"jpg"`` (VOC's layout; 4:4:4, deterministic for a given libjpeg) or
            ``"png"`` (lossless).
        jpeg_quality: JPEG quality.
    """

    seed: int = 0
    train: int = 800
    val: int = 200
    size_min: int = 96
    size_max: int = 144
    num_classes: int = 6
    class_names: tuple[str, ...] = ()
    class_weights: tuple[float, ...] = ()
    class_scales: tuple[float, ...] = ()
    objects_probs: tuple[float, ...] = (0.45, 0.4, 0.15)
    cooccurrence: float = 0.5
    head_size: tuple[int, int] = (14, 24)
    body_length: tuple[int, int] = (50, 100)
    body_width: tuple[int, int] = (20, 34)
    body_bend: float = 0.25
    body_tint: float = 0.11
    body_contrast: float = 0.06
    near_distance: float = 16.0
    context_classes: tuple[int, ...] = (0, 2)
    context_rate: float = 0.85
    context_absent_rate: float = 0.25
    context_area: tuple[float, float] = (0.35, 0.65)
    ignore_width: int = 1
    image_format: str = "jpg"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        self._validate()

    @property
    def names(self) -> tuple[str, ...]:
        """The C foreground class names in order (``class_names`` or the defaults)."""
        return tuple(self.class_names) or default_class_names(self.num_classes)

    def split_sizes(self) -> dict[str, int]:
        """``{"train": train, "val": val}``."""
        return {"train": self.train, "val": self.val}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the knobs (tuples as lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthConfig:
        """Inverse of :meth:`to_dict`; an unknown key or a wrong type is an error naming it."""
        return dataclass_from_dict(cls, data, "synth")

    def _validate(self) -> None:
        def fail(name: str, problem: str) -> None:
            raise ConfigError(f"synthetic config: {name} {problem}")

        for name in ("train", "val"):
            if getattr(self, name) < 0:
                fail(name, "must be >= 0")
        if self.train + self.val == 0:
            fail("train/val", "must ask for at least one image")
        if not 64 <= self.size_min <= self.size_max:
            fail(
                "size_min/size_max",
                f"must satisfy 64 <= size_min <= size_max, got {self.size_min}, {self.size_max}",
            )
        if self.num_classes < 1:
            fail("num_classes", "must be >= 1")
        if self.class_names and len(self.class_names) != self.num_classes:
            fail("class_names", f"has {len(self.class_names)} names for {self.num_classes} classes")
        names = self.class_names or default_class_names(self.num_classes)
        if len(set(names)) != len(names) or any(not n or n != n.strip() or " " in n for n in names):
            fail("class_names", f"must be distinct non-empty names without spaces, got {names}")
        if self.class_weights and (
            len(self.class_weights) != self.num_classes
            or min(self.class_weights) < 0
            or sum(self.class_weights) <= 0
        ):
            fail("class_weights", f"must be {self.num_classes} non-negative weights, not all 0")
        if self.class_scales and (
            len(self.class_scales) != self.num_classes or min(self.class_scales) < 0.25
        ):
            fail("class_scales", f"must be {self.num_classes} factors >= 0.25")
        if not self.objects_probs or min(self.objects_probs) < 0 or sum(self.objects_probs) <= 0:
            fail("objects_probs", "must be non-negative probabilities, not all 0")
        for name in ("cooccurrence", "body_tint", "context_rate", "context_absent_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, f"must be in [0, 1], got {getattr(self, name)}")
        for name, low in (("head_size", 6), ("body_length", 10), ("body_width", 4)):
            lo, hi = getattr(self, name)
            if not low <= lo <= hi:
                fail(name, f"must be a range ({low} <= low <= high), got ({lo}, {hi})")
        if self.head_size[1] > self.size_min // 3:
            fail("head_size", f"heads up to {self.head_size[1]} px do not fit {self.size_min} px")
        if not 0.0 <= self.body_bend <= 1.0:
            fail("body_bend", f"must be in [0, 1], got {self.body_bend}")
        if not 0.0 <= self.body_contrast <= 0.5:
            fail("body_contrast", f"must be in [0, 0.5], got {self.body_contrast}")
        if self.near_distance < 0:
            fail("near_distance", "must be >= 0")
        bad = [c for c in self.context_classes if not 0 <= c < self.num_classes]
        if bad or len(set(self.context_classes)) != len(self.context_classes):
            fail("context_classes", f"must be distinct indices in 0..{self.num_classes - 1}")
        lo, hi = self.context_area
        if not 0.0 < lo <= hi < 1.0:
            fail("context_area", f"must satisfy 0 < low <= high < 1, got ({lo}, {hi})")
        if not 0 <= self.ignore_width <= 4:
            fail("ignore_width", f"must be in 0..4, got {self.ignore_width}")
        if self.image_format not in IMAGE_FORMATS:
            fail("image_format", f"must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            fail("jpeg_quality", f"must be in 1..100, got {self.jpeg_quality}")
