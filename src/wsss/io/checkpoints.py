"""Model checkpoints (safetensors + JSON) and the resumable training state, without pickle.

A checkpoint is ``<stem>.safetensors`` (the state dict; its header metadata also carries the
JSON under ``wsss`` and a SHA-256 of the tensors under ``wsss_sha256``) and ``<stem>.json``
beside it: ``architecture`` (``{"type": <registered model name>, **constructor arguments}``),
``classes``, ``config``, ``step``, ``epoch``, ``metrics``. The checksum is verified on every
load, so a damaged file is an error rather than silently wrong weights.

Rebuilding a model from a checkpoint needs the model registry: see
:func:`wsss.models.load_model`. This module only reads and writes files.

The training state is ``state.json`` plus the tensor file it names
(``state-<step>.safetensors``): module and optimiser tensors and RNG states in the tensor
file, everything scalar in the JSON. The JSON is written last and replaced atomically, so it
always points at a complete tensor file, even after a crash while saving.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from wsss.errors import DataError
from wsss.io.atomic import atomic_path, atomic_write_json

__all__ = [
    "CHECKPOINT_DIR",
    "load_state_file",
    "read_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_state_file",
    "tensors_sha256",
]

CHECKPOINT_DIR = "checkpoints"
STATE_NAME = "state.json"


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or strided storage; a copy per tensor is cheap next to IO.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (in sorted name order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tensors = _contiguous(tensors)
    metadata = {"format": "pt", **metadata, "wsss_sha256": tensors_sha256(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def save_checkpoint(
    stem: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> Path:
    """Write ``<stem>.safetensors`` (with checksum) and ``<stem>.json`` atomically.

    Args:
        stem: Path without suffix.
        state_dict: The weights.
        meta: JSON-serialisable metadata (``architecture``, ``classes``, ``config``, ...).

    Returns:
        The weights path.
    """
    stem = Path(stem)
    meta = dict(meta)
    weights = stem.with_suffix(".safetensors")
    _save_tensors(weights, dict(state_dict), {"wsss": json.dumps(meta, indent=2)})
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
            with safe_open(str(weights), framework="pt") as f:
                expected = (f.metadata() or {}).get("wsss_sha256")
            state = load_file(str(weights), device=str(map_location))
            if expected is not None and tensors_sha256(state) != expected:
                raise DataError(
                    f"{weights}: checksum mismatch, the file is damaged; restore it or retrain"
                )
            return state
        state = torch.load(weights, map_location=map_location, weights_only=True)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{weights}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{weights}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """The tensors and metadata of a checkpoint, and the weights file they came from.

    Args:
        path: Weights file, its JSON, a ``checkpoints/`` folder or a run directory (see
            :func:`resolve_checkpoint`); foreign ``.pth``/``.pt``/``.bin`` files are read with
            ``torch.load(weights_only=True)`` (never unpickling code).
        map_location: Device of the tensors.

    Raises:
        DataError: Missing, unreadable or damaged file (checksum mismatch).
    """
    weights = resolve_checkpoint(path)
    meta = _read_meta(weights) or {}
    return _read_tensors(weights, map_location), meta, weights


# ---------------------------------------------------------------------------------------------
# resumable training state


def save_state_file(
    folder: str | os.PathLike, tensors: dict[str, torch.Tensor], info: dict[str, Any]
) -> Path:
    """Save a training state (tensors + JSON) into ``folder``; older tensor files are removed."""
    folder = Path(folder)
    name = f"state-{int(info['step']):08d}.safetensors"
    _save_tensors(folder / name, dict(tensors), {})
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
        tensors = _read_tensors(folder / info["tensors"], "cpu")
    except DataError as e:
        raise DataError(f"{index}: unreadable training state ({e})") from None
    except Exception as e:
        raise DataError(f"{index}: unreadable training state ({type(e).__name__}: {e})") from None
    return tensors, info
