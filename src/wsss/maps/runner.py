"""Write the class maps of a whole dataset split, one ``<id>.npz`` per image.

Files are written atomically and a readable file is never recomputed, so an interrupted run
resumes where it stopped. Under ``torch.distributed`` rank ``r`` of ``world`` processes takes
``ids[r::world]``. A ``maps.json`` manifest (method, checkpoint, scales, ...) is written once
every image of the split has its file; a later run with different settings into the same
folder is refused instead of mixing maps.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from wsss.data.base import SegmentationDataset
from wsss.data.transforms import to_tensor
from wsss.errors import ConfigError, DataError, WsssError
from wsss.io.atomic import atomic_write_json
from wsss.io.maps import save_class_maps
from wsss.maps.methods import MapMethod, get_map_method
from wsss.maps.tta import DEFAULT_SCALES

__all__ = ["MANIFEST_NAME", "MapsRunResult", "is_complete_map_file", "run_maps"]

MANIFEST_NAME = "maps.json"
_MANIFEST_KEYS = ("method", "checkpoint", "scales", "classes", "split")


@dataclass
class MapsRunResult:
    """Outcome of :func:`run_maps` on this process.

    Attributes:
        out_dir: Folder of the map files.
        written: Files computed by this process.
        skipped: Files of this process's share found complete.
        complete: Whether every image of the split now has its file (manifest written).
        seconds: Wall time.
    """

    out_dir: Path
    written: int
    skipped: int
    complete: bool
    seconds: float


def is_complete_map_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a readable class-map file (checks the archive index, not the data)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"keys", "cam", "hr"} <= set(z.files)
    except Exception:  # missing, truncated or foreign file: recompute it
        return False


class _Images(Dataset):
    """Decodes images (and labels) in loader workers; user errors travel back as values."""

    def __init__(self, dataset: SegmentationDataset, indices: Sequence[int], labels: bool):
        self.dataset, self.indices, self.labels = dataset, list(indices), labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample_id = self.dataset.ids[self.indices[i]]
        try:
            image = self.dataset.load_image(sample_id)
            label = self.dataset.load_label(sample_id) if self.labels else None
        except WsssError as e:
            return {"id": sample_id, "error": e}
        return {"id": sample_id, "image": to_tensor(image), "label": label}


def _as_list(batch: list) -> list:
    return batch


def _label_classes(sample_id: str, label: np.ndarray, num_classes: int) -> list[int]:
    label = np.asarray(label).reshape(-1)
    if label.shape[0] != num_classes:
        raise DataError(f"{sample_id}: label has {label.shape[0]} entries, expected {num_classes}")
    return np.flatnonzero(label >= 0.5).tolist()


def _distributed_shard() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _same(key: str, old: Any, new: Any) -> bool:
    if key == "checkpoint" and old is not None and new is not None:
        return Path(old).resolve() == Path(new).resolve()  # the same file named another way
    return old == new


def _check_manifest(path: Path, settings: dict[str, Any]) -> None:
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: unreadable manifest ({e}); delete it to start over") from e
    changed = [k for k in _MANIFEST_KEYS if k in old and not _same(k, old[k], settings[k])]
    if changed:
        diff = ", ".join(f"{k}: {old[k]!r} → {settings[k]!r}" for k in changed)
        raise ConfigError(
            f"{path.parent} holds maps made with other settings ({diff}); "
            "choose another output folder or delete it"
        )


def run_maps(
    method: str | MapMethod,
    model: nn.Module,
    dataset: SegmentationDataset,
    out_dir: str | os.PathLike,
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    classes: Literal["gt", "predicted"] = "gt",
    device: torch.device | str | None = None,
    amp: bool = True,
    batch_size: int = 1,
    num_workers: int = 0,
    method_options: dict[str, Any] | None = None,
    checkpoint: str | os.PathLike | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    channels_last: bool = True,
    progress: bool = True,
) -> MapsRunResult:
    """Compute and save the class maps of every image of ``dataset`` missing in ``out_dir``.

    Args:
        method: A registered map method name (``"cam"``, ``"lpcam"``) or a callable with the
            :class:`~wsss.maps.methods.MapMethod` signature.
        model: The network the method needs; moved to ``device``, set to eval mode and, with
            ``channels_last``, to channels-last memory format.
        dataset: Images (and, for ``classes="gt"``, image labels).
        out_dir: Output folder, created if needed.
        scales: TTA scales.
        classes: ``"gt"`` keeps the labelled classes; ``"predicted"`` the classes the model
            predicts (for unlabelled images).
        device: Where the model runs; default its current device.
        amp: Autocast on CUDA.
        batch_size: Images handed to the method at once (equal sizes share forward passes).
        num_workers: ``DataLoader`` processes decoding images.
        method_options: Extra keyword arguments of the method.
        checkpoint: Recorded in the manifest.
        rank: Shard index; default the ``torch.distributed`` rank (0 when not distributed).
        world_size: Number of shards; default the ``torch.distributed`` world size.
        channels_last: Run convolutions in channels-last layout (same maps up to float
            rounding; measured faster on CPU, see ``benchmarks/README.md``).
        progress: Show a progress bar (rank 0 only).
    """
    if classes not in ("gt", "predicted"):
        raise ConfigError(f"classes must be 'gt' or 'predicted', got {classes!r}")
    if batch_size < 1 or num_workers < 0:
        raise ConfigError(
            f"batch_size must be ≥ 1 and num_workers ≥ 0 ({batch_size}, {num_workers})"
        )
    fn = get_map_method(method) if isinstance(method, str) else method
    method_name = method if isinstance(method, str) else getattr(method, "__name__", repr(method))
    model_classes = getattr(model, "num_classes", None)
    if classes == "gt" and model_classes is not None and model_classes != dataset.num_classes:
        raise ConfigError(
            f"the model has {model_classes} classes but dataset {dataset.root} has "
            f"{dataset.num_classes}; use the checkpoint trained on this dataset"
        )
    default_rank, default_world = _distributed_shard()
    rank = default_rank if rank is None else rank
    world_size = default_world if world_size is None else world_size

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "method": method_name,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "scales": [float(s) for s in scales],
        "classes": classes,
        "split": getattr(dataset, "split", None),
    }
    _check_manifest(out_dir / MANIFEST_NAME, settings)

    def target(sample_id: str) -> Path:
        return out_dir / f"{sample_id}.npz"

    share = range(rank, len(dataset), world_size)
    pending = [i for i in share if not is_complete_map_file(target(dataset.ids[i]))]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = DataLoader(
        _Images(dataset, pending, labels=classes == "gt"),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_as_list,
    )
    bar = tqdm(
        total=len(pending),
        desc=f"{method_name} maps",
        unit="img",
        disable=not progress or rank != 0,
    )
    with bar:
        for items in loader:
            for item in items:
                if "error" in item:
                    raise item["error"]
            if classes == "gt":
                wanted = [
                    _label_classes(it["id"], it["label"], dataset.num_classes) for it in items
                ]
            else:
                wanted = [None] * len(items)
            maps = fn(
                model,
                [it["image"] for it in items],
                wanted,
                scales=scales,
                device=device,
                amp=amp,
                **(method_options or {}),
            )
            for item, item_maps in zip(items, maps, strict=True):
                save_class_maps(target(item["id"]), item_maps)
            bar.update(len(items))

    if world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()
    complete = all(target(i).is_file() for i in dataset.ids)
    if complete and rank == 0:
        atomic_write_json(out_dir / MANIFEST_NAME, {**settings, "count": len(dataset)})
    return MapsRunResult(
        out_dir=out_dir,
        written=len(pending),
        skipped=len(share) - len(pending),
        complete=complete,
        seconds=time.perf_counter() - start,
    )
