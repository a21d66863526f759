"""Map methods: registered objects that turn images into one or several kinds of maps.

A method is a small class registered in :data:`MAP_METHODS`; adding one is one module with
its registration, listed in the registry's built-in modules (or imported by the user)::

    @register_map_method("cam")
    class CAMMethod(MapMethod):
        outputs = ("cam",)

        def compute(self, model, images, class_indices, **tta):
            return [{"cam": m} for m in cam_maps_batch(model, images, class_indices, **tta)]

A method declares:

- ``model_types``: the registered model kinds (:data:`wsss.models.MODELS`) it runs. Every
  method runs one model, loaded from ``--checkpoint``.
- ``files``: further input files, name → help, given as constructor options (LPCAM's
  ``prototypes``; on the command line ``--input prototypes=PATH``).
- ``outputs``: the kinds of maps one pass produces. :func:`~wsss.maps.runner.run_maps`
  writes each to its own folder, so LPCAM gives ``lpcam`` and ``lpcam_f`` from one feature
  pass.
- ``class_agnostic``: True for maps that do not depend on the classes (saliency, e.g.
  C²AM). Such a method ignores ``class_indices`` and returns one channel per image with key
  :data:`AGNOSTIC_KEY` (0, the background id, which no class uses); the runner then reads
  no labels.
- :meth:`MapMethod.settings`: the options that determine the maps, recorded in the
  ``maps.json`` of each output folder so that a rerun with other options is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from wsss.errors import ConfigError
from wsss.io.maps import ClassMaps
from wsss.registry import Registry

__all__ = [
    "AGNOSTIC_KEY",
    "MAP_METHODS",
    "FunctionMethod",
    "MapMethod",
    "create_map_method",
    "get_map_method",
    "list_map_methods",
    "register_map_method",
]

AGNOSTIC_KEY = 0
"""Key of the single channel of a class-agnostic map (saliency)."""


class MapMethod:
    """Base of the registered map methods (see the module docstring).

    Subclasses set the class attributes, take their options (``files`` among them) as
    keyword arguments and implement :meth:`compute`.
    """

    name: ClassVar[str] = ""
    outputs: ClassVar[tuple[str, ...]] = ()
    model_types: ClassVar[tuple[str, ...]] = ("cam_classifier",)
    files: ClassVar[Mapping[str, str]] = {}
    class_agnostic: ClassVar[bool] = False

    def settings(self) -> dict[str, Any]:
        """JSON values of the options that determine the maps (default: none)."""
        return {}

    def restrict(self, outputs: Sequence[str]) -> MapMethod:
        """A method computing at least ``outputs`` (default: this one; the runner ignores
        the others). Override when leaving outputs out saves work."""
        return self

    def check(self, model: nn.Module, class_names: Sequence[str] | None) -> None:
        """Refuse inputs that do not fit ``model`` or the dataset's classes (before any work).

        Raises:
            ConfigError: e.g. prototypes fitted on another classifier.
        """

    def compute(
        self,
        model: nn.Module,
        images: Sequence[torch.Tensor],
        class_indices: Sequence[Sequence[int] | None],
        *,
        scales: Sequence[float],
        device: torch.device,
        amp: bool,
        max_pixels: int | None,
    ) -> list[dict[str, ClassMaps]]:
        """The maps of ``images``: per image, output name → :class:`ClassMaps`.

        Args:
            model: The network, on ``device``, in eval mode.
            images: ``3×H×W`` ``uint8`` RGB images (any sizes).
            class_indices: Per image, the classes (0..C−1) to keep, or None for the classes
                the model predicts; ignored by class-agnostic methods.
            scales: TTA scales.
            device: Where the model runs.
            amp: Autocast on CUDA.
            max_pixels: Input pixels per forward call (None: per device).
        """
        raise NotImplementedError


class FunctionMethod(MapMethod):
    """A plain function as a one-output method.

    Args:
        fn: ``fn(model, images, class_indices, *, scales, device, amp, max_pixels,
            **options) -> list[ClassMaps]``.
        name: Name of the method and of its output (default ``fn.__name__``).
        **options: Passed to ``fn`` on every call.
    """

    def __init__(self, fn: Callable[..., list[ClassMaps]], name: str | None = None, **options):
        self.fn, self.options = fn, options
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.outputs = (self.name,)

    def compute(self, model, images, class_indices, **tta) -> list[dict[str, ClassMaps]]:
        maps = self.fn(model, images, class_indices, **tta, **self.options)
        return [{self.name: m} for m in maps]


MAP_METHODS: Registry[type[MapMethod]] = Registry(
    "map method", modules=("wsss.maps.cam", "wsss.maps.lpcam")
)


def register_map_method(name: str) -> Callable[[type[MapMethod]], type[MapMethod]]:
    """Class decorator: register a :class:`MapMethod` subclass under ``name``."""

    def deco(cls: type[MapMethod]) -> type[MapMethod]:
        cls.name = name
        if not cls.outputs:
            cls.outputs = (name,)
        return MAP_METHODS.register(name)(cls)

    return deco


def list_map_methods() -> list[str]:
    """Names of the registered map methods."""
    return MAP_METHODS.names()


def get_map_method(name: str) -> type[MapMethod]:
    """The method class registered as ``name``.

    Raises:
        ConfigError: Unknown name (the message lists the known ones).
    """
    try:
        return MAP_METHODS.get(name)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None


def create_map_method(name: str, **options: Any) -> MapMethod:
    """An instance of method ``name`` with its options (e.g. ``prototypes=...``).

    Raises:
        ConfigError: Unknown method, unknown option or missing input file.
    """
    cls = get_map_method(name)
    missing = [f for f in cls.files if options.get(f) is None]
    if missing:
        need = "; ".join(f"{f}: {cls.files[f]}" for f in missing)
        raise ConfigError(f"map method {name!r} needs {need} (--input {missing[0]}=PATH)")
    try:
        return cls(**options)
    except TypeError as e:
        raise ConfigError(f"map method {name!r}: {e}") from None
