"""The model registry and the functions that build, save and load any registered model.

A model kind registers its class (or factory) under a name::

    @MODELS.register("cam_classifier")
    class CAMClassifier(nn.Module):
        def architecture(self) -> dict: ...   # {"type": "cam_classifier", **constructor args}

``architecture()`` must return the registered name under ``type`` and constructor keyword
arguments that rebuild the model untrained (``pretrained=False`` is added on load), so that
:func:`load_model` can rebuild any kind from its checkpoint without unpickling code.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsss.errors import ConfigError, DataError
from wsss.io.checkpoints import read_checkpoint, save_checkpoint
from wsss.registry import Registry

__all__ = ["MODELS", "create_model", "list_models", "load_model", "save_model"]

MODELS: Registry[Any] = Registry("model")

# Modules that register the built-in model kinds when imported.
_BUILTIN_MODULES = (
    "wsss.models.classifier",
    "wsss.models.ccam",
    "wsss.models.segmentation",
    "wsss.models.boundary",
)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    """Names of the registered model kinds."""
    _load_builtins()
    return MODELS.names()


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model kind, e.g. ``create_model("cam_classifier", backbone="resnet50")``.

    Raises:
        ConfigError: Unknown model kind or bad arguments.
    """
    _load_builtins()
    try:
        factory = MODELS.get(name)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"model {name!r}: {e}") from None


def save_model(stem: str | os.PathLike, model: nn.Module, meta: Mapping[str, Any]) -> Path:
    """Save ``model`` as ``<stem>.safetensors`` + ``<stem>.json``; return the weights path.

    ``meta`` should hold ``classes``, ``config``, ``step``, ``epoch`` and ``metrics``;
    ``architecture`` is taken from ``model.architecture()`` when the model has it.
    """
    meta = dict(meta)
    if hasattr(model, "architecture"):
        meta.setdefault("architecture", model.architecture())
    return save_checkpoint(stem, model.state_dict(), meta)


def build_from_architecture(architecture: Mapping[str, Any]) -> nn.Module:
    """An untrained model from an ``architecture()`` dict (no weights are fetched)."""
    _load_builtins()
    kwargs = dict(architecture)
    kind = kwargs.pop("type", None)
    if kind not in MODELS:
        known = ", ".join(MODELS.names())
        raise DataError(f"unknown architecture type {kind!r} in checkpoint (known: {known})")
    try:
        return MODELS.get(kind)(**kwargs, pretrained=False)
    except TypeError as e:
        raise DataError(f"architecture {dict(architecture)} does not build a {kind}: {e}") from None


def load_model(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    architecture: Mapping[str, Any] | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained model of any registered kind from its checkpoint, for inference.

    Args:
        path: Weights file, its JSON, a ``checkpoints/`` folder or a run directory. Foreign
            ``.pth`` files are read with ``torch.load(weights_only=True)`` and need a JSON
            beside them or ``architecture``.
        map_location: Device of the returned model.
        architecture: Overrides the architecture recorded with the checkpoint.
        classes: When given, refuse a checkpoint trained on other classes.

    Returns:
        The model in eval mode on ``map_location`` and the metadata dict.

    Raises:
        DataError: Missing, unreadable or damaged file, unknown architecture, or weights
            that do not fit it.
        ConfigError: The checkpoint was trained on other classes than ``classes``.
    """
    state, meta, weights = read_checkpoint(path, "cpu")
    arch = architecture or meta.get("architecture")
    if arch is None:
        raise DataError(
            f"{weights}: no architecture recorded; put a JSON with 'architecture' beside it or "
            f"pass architecture={{'type': 'cam_classifier', 'backbone': ..., 'num_classes': ...}}"
        )
    meta = {**meta, "architecture": dict(arch)}
    trained_on = meta.get("classes")
    if classes is not None and trained_on is not None and list(trained_on) != list(classes):
        raise ConfigError(
            f"{path} was trained on classes {list(trained_on)}, but the dataset has {list(classes)}"
        )
    model = build_from_architecture(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise DataError(f"{weights}: weights do not match architecture {dict(arch)}: {e}") from None
    return model.to(map_location).eval(), meta
