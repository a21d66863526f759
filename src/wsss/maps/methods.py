"""Registry of class-map methods used by :func:`wsss.maps.runner.run_maps`.

A map method computes the class maps of a batch of images::

    method(model, images, class_indices, *, scales, device, amp, **options) -> list[ClassMaps]

``images`` are ``3×H×W`` ``uint8`` RGB tensors of any sizes; ``class_indices[i]`` lists the
classification-space classes to keep for image ``i``, or is None for "the classes the model
predicts". New methods register themselves with ``@MAP_METHODS.register("name")`` in their
module; built-in modules are imported on first lookup.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from wsss.errors import ConfigError
from wsss.io.maps import ClassMaps
from wsss.maps.cam import cam_maps_batch
from wsss.registry import Registry

__all__ = ["MAP_METHODS", "MapMethod", "get_map_method"]


class MapMethod(Protocol):
    """Signature of a registered map method."""

    def __call__(
        self,
        model: nn.Module,
        images: Sequence[torch.Tensor],
        class_indices: Sequence[Sequence[int] | None],
        *,
        scales: Sequence[float],
        device: torch.device | str | None = None,
        amp: bool = True,
        **options: Any,
    ) -> list[ClassMaps]: ...


MAP_METHODS: Registry[MapMethod] = Registry("map method")
MAP_METHODS.register("cam")(cam_maps_batch)

# Modules that register further built-in methods when imported.
_BUILTIN_MODULES = ("wsss.maps.lpcam", "wsss.maps.saliency")


def get_map_method(name: str) -> MapMethod:
    """The map method registered as ``name``."""
    if name not in MAP_METHODS:
        for module in _BUILTIN_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as e:
                if e.name != module:
                    raise
    try:
        return MAP_METHODS.get(name)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
