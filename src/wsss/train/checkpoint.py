"""Classifier checkpoints (safetensors + JSON) and the resumable training state, without pickle.

A classifier checkpoint is ``<stem>.safetensors`` (the state dict; its header metadata also
carries the JSON under ``wsss``) and ``<stem>.json`` beside it: ``architecture`` (from
``model.architecture()``), ``classes``, ``config``, ``step``, ``epoch``, ``metrics``.

The training state is ``state.json`` plus the tensor file it names
(``state-<step>.safetensors``): module and optimiser tensors and RNG states in the tensor
file, everything scalar in the JSON. The JSON is written last and replaced atomically, so it
always points at a complete tensor file, even after a crash while saving.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from wsss.errors import ConfigError, DataError
from wsss.utils.io import atomic_path, atomic_write_json

__all__ = [
    "build_from_architecture",
    "load_classifier",
    "load_state_file",
    "resolve_checkpoint",
    "save_classifier",
    "save_state_file",
]

CHECKPOINT_DIR = "checkpoints"
STATE_NAME = "state.json"


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or strided storage; a copy per tensor is cheap next to IO.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_classifier(stem: str | os.PathLike, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` atomically; return the weights path.

    ``meta`` should hold ``classes``, ``config``, ``step``, ``epoch`` and ``metrics``;
    ``architecture`` is taken from ``model.architecture()`` when the model has it.
    """
    stem = Path(stem)
    meta = dict(meta)
    if hasattr(model, "architecture"):
        meta.setdefault("architecture", model.architecture())
    text = json.dumps(meta, indent=2, sort_keys=False)
    weights = stem.with_suffix(".safetensors")
    with atomic_path(weights) as tmp:
        save_file(
            _contiguous(model.state_dict()), str(tmp), metadata={"format": "pt", "wsss": text}
        )
    atomic_write_json(stem.with_suffix(".json"), meta)
    return weights


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The weights file that ``path`` designates.

    ``path`` may be the weights file, its ``.json``, a ``checkpoints/`` folder or a run
    directory (both resolve to ``last.safetensors``), or a foreign ``.pth``/``.pt``/``.bin``.
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (path / CHECKPOINT_DIR / "last.safetensors", path / "last.safetensors"):
            if candidate.is_file():
                return candidate
        raise DataError(f"{path}: no checkpoint found (expected {CHECKPOINT_DIR}/last.safetensors)")
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise DataError(f"{path}: checkpoint file not found")
    return path


def build_from_architecture(architecture: dict[str, Any]) -> nn.Module:
    """Rebuild an untrained model from an ``architecture()`` dict (no weights fetched)."""
    kind = architecture.get("type")
    if kind == "cam_classifier":
        from wsss.models.classifier import CAMClassifier

        return CAMClassifier(
            backbone=architecture["backbone"],
            num_classes=int(architecture["num_classes"]),
            output_stride=int(architecture.get("output_stride", 16)),
            pretrained=False,
        )
    raise DataError(f"unknown architecture type {kind!r} in checkpoint metadata")


def _read_meta(weights: Path) -> dict[str, Any] | None:
    sidecar = weights.with_suffix(".json")
    if weights.suffix == ".safetensors":
        try:
            with safe_open(str(weights), framework="pt") as f:
                text = (f.metadata() or {}).get("wsss")
        except Exception as e:
            raise DataError(f"{weights}: not a safetensors file ({e})") from None
        if text:
            return json.loads(text)
    if sidecar.is_file():
        try:
            return json.loads(sidecar.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{sidecar}: invalid JSON ({e})") from None
    return None


def _read_tensors(weights: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    try:
        if weights.suffix == ".safetensors":
            return load_file(str(weights), device=str(map_location))
        state = torch.load(weights, map_location=map_location, weights_only=True)
    except Exception as e:
        raise DataError(f"{weights}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{weights}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_classifier(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    architecture: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a trained classifier for inference.

    Args:
        path: Weights file, its JSON, a ``checkpoints/`` folder or a run directory (see
            :func:`resolve_checkpoint`). Foreign ``.pth`` files are read with
            ``torch.load(weights_only=True)`` and need a JSON beside them or ``architecture``.
        map_location: Device of the returned model.
        architecture: Overrides the architecture recorded with the checkpoint.

    Returns:
        The model in eval mode on ``map_location`` and the metadata dict (``classes``,
        ``architecture``, ``config``, ``step``, ``epoch``, ``metrics``; ``{}`` parts missing
        for foreign files).

    Raises:
        DataError: Missing or unreadable file, unknown architecture, or weights that do not
            fit the architecture.
    """
    weights = resolve_checkpoint(path)
    meta = _read_meta(weights) or {}
    arch = architecture or meta.get("architecture")
    if arch is None:
        raise DataError(
            f"{weights}: no architecture recorded; put a JSON with 'architecture' beside it or "
            f"pass architecture={{'type': 'cam_classifier', 'backbone': ..., 'num_classes': ...}}"
        )
    meta = {**meta, "architecture": arch}
    model = build_from_architecture(arch)
    state = _read_tensors(weights, "cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise DataError(f"{weights}: weights do not match architecture {arch}: {e}") from None
    return model.to(map_location).eval(), meta


# ---------------------------------------------------------------------------------------------
# resumable training state


def save_state_file(
    folder: str | os.PathLike, tensors: dict[str, torch.Tensor], info: dict[str, Any]
) -> Path:
    """Save a training state (tensors + JSON) into ``folder``; older tensor files are removed."""
    folder = Path(folder)
    name = f"state-{int(info['step']):08d}.safetensors"
    with atomic_path(folder / name) as tmp:
        save_file(_contiguous(tensors), str(tmp), metadata={"format": "pt"})
    atomic_write_json(folder / STATE_NAME, {**info, "tensors": name})
    for old in folder.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return folder / STATE_NAME


def load_state_file(
    folder: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The training state saved in ``folder``, or None if there is none."""
    folder = Path(folder)
    index = folder / STATE_NAME
    if not index.is_file():
        return None
    try:
        info = json.loads(index.read_text(encoding="utf-8"))
        tensors = load_file(str(folder / info["tensors"]))
    except (json.JSONDecodeError, KeyError, OSError, Exception) as e:
        raise DataError(f"{index}: unreadable training state ({type(e).__name__}: {e})") from None
    return tensors, info


def load_classifier_for(
    path: str | os.PathLike, classes: list[str], map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`load_classifier`, refusing a checkpoint trained on other classes than ``classes``."""
    model, meta = load_classifier(path, map_location=map_location)
    trained_on = meta.get("classes")
    if trained_on is not None and list(trained_on) != list(classes):
        raise ConfigError(
            f"{path} was trained on classes {list(trained_on)}, but the dataset has {list(classes)}"
        )
    return model, meta
