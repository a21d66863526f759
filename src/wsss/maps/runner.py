"""Write the maps of a whole dataset split with any map method, one ``<id>.npz`` per image.

One runner serves every method (:mod:`wsss.maps.methods`): it decodes images in
``DataLoader`` workers, batches them, shards them over ``torch.distributed`` ranks (rank ``r``
of ``world`` takes ``ids[r::world]``), and writes each output of the method into its own
:class:`~wsss.io.maps.MapStore` in the same pass.

Every output folder records its settings (method, checkpoint, scales, ...) in ``maps.json``
before the first map is written and is marked complete once every image of the split has its
file. A rerun with the same settings resumes (readable files are never recomputed); one with
other settings, or into a folder holding maps without a record, is refused unless
``restart=True``, which starts the folder over.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from wsss.data.base import SegmentationDataset
from wsss.data.transforms import to_tensor
from wsss.errors import ConfigError, DataError, WsssError
from wsss.io.maps import MANIFEST_NAME, MapStore, is_complete_map_file
from wsss.maps.methods import FunctionMethod, MapMethod, create_map_method
from wsss.maps.tta import (
    DEFAULT_MAX_INPUT_MEGAPIXELS,
    DEFAULT_SCALES,
    check_input_size,
)
from wsss.runtime import dist_info, progress_bar
from wsss.runtime.distributed import raise_if_any_failed

__all__ = [
    "MANIFEST_NAME",
    "MapsRunResult",
    "default_batch_size",
    "is_complete_map_file",
    "output_folders",
    "run_maps",
]


@dataclass
class MapsRunResult:
    """Outcome of :func:`run_maps` on this process.

    Attributes:
        outputs: Folder of each output written, by output name.
        written: Images computed by this process.
        skipped: Images of this process's share found complete.
        complete: Whether every image of the split now has its files (folders marked so).
        seconds: Wall time.
    """

    outputs: dict[str, Path]
    written: int
    skipped: int
    complete: bool
    seconds: float

    @property
    def out_dir(self) -> Path:
        """The folder of the first output."""
        return next(iter(self.outputs.values()))


def default_batch_size(device: torch.device | str) -> int:
    """Images per method call when not set: 1 on the CPU, 8 on a GPU.

    Equal-sized images of one call share forward passes (up to ``max_pixels``). On the CPU
    that gains at most a few per cent, on small images only, and holds the maps of several
    images at once (``benchmarks/cam_tta.py``); a GPU needs batches to be busy.
    """
    return 1 if torch.device(device).type == "cpu" else 8


def output_folders(
    method: MapMethod, out: str | os.PathLike | Mapping[str, str | os.PathLike]
) -> dict[str, Path]:
    """Where each output of ``method`` goes.

    ``out`` is the folder of a one-output method, the parent of one sub-folder per output
    (named after it) for a method with several, or a mapping output → folder (a subset of
    the outputs writes only those).
    """
    if isinstance(out, Mapping):
        unknown = sorted(set(out) - set(method.outputs))
        if unknown or not out:
            raise ConfigError(
                f"map method {method.name!r} has outputs {list(method.outputs)}, "
                f"got folders for {sorted(out)}"
            )
        return {name: Path(folder) for name, folder in out.items()}
    if len(method.outputs) == 1:
        return {method.outputs[0]: Path(out)}
    return {name: Path(out) / name for name in method.outputs}


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


def _as_method(method: str | MapMethod | Callable, options: Mapping[str, Any] | None) -> MapMethod:
    if isinstance(method, str):
        return create_map_method(method, **(options or {}))
    if isinstance(method, MapMethod):
        if options:
            raise ConfigError("method_options go with a method name, not a method object")
        return method
    if callable(method):
        return FunctionMethod(method, **(options or {}))
    raise ConfigError(f"not a map method: {method!r}")


def _check_model(method: MapMethod, model: nn.Module) -> None:
    kind = model.architecture().get("type") if hasattr(model, "architecture") else None
    if kind is not None and kind not in method.model_types:
        raise ConfigError(
            f"map method {method.name!r} runs a {' or '.join(method.model_types)} model, the "
            f"checkpoint holds a {kind!r}"
        )


def run_maps(
    method: str | MapMethod | Callable,
    model: nn.Module,
    dataset: SegmentationDataset,
    out: str | os.PathLike | Mapping[str, str | os.PathLike],
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    classes: Literal["gt", "predicted"] = "gt",
    device: torch.device | str | None = None,
    amp: bool = True,
    batch_size: int | None = None,
    num_workers: int = 0,
    method_options: Mapping[str, Any] | None = None,
    checkpoint: str | os.PathLike | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    channels_last: bool = True,
    progress: bool = True,
    restart: bool = False,
    max_pixels: int | None = None,
    max_input_megapixels: float | None = DEFAULT_MAX_INPUT_MEGAPIXELS,
) -> MapsRunResult:
    """Compute and save the maps of every image of ``dataset`` missing in the output folders.

    Args:
        method: A registered method name (``"cam"``, ``"lpcam"``, ``"lpcam_f"``; see
            :func:`~wsss.maps.methods.list_map_methods`), a :class:`MapMethod`, or a function
            with the :class:`~wsss.maps.methods.FunctionMethod` signature.
        model: The network the method runs; moved to ``device``, set to eval mode and, with
            ``channels_last``, to channels-last memory format.
        dataset: Images (and, for ``classes="gt"``, image labels).
        out: Output folder(s), see :func:`output_folders`: for ``lpcam`` (outputs ``lpcam``
            and ``lpcam_f``) ``out/lpcam`` and ``out/lpcam_f``.
        scales: TTA scales.
        classes: ``"gt"`` keeps the labelled classes; ``"predicted"`` the classes the model
            predicts (for unlabelled images). Class-agnostic methods ignore it.
        device: Where the model runs; default its current device.
        amp: Autocast on CUDA.
        batch_size: Images handed to the method at once (equal sizes share forward passes);
            None: :func:`default_batch_size` (1 on the CPU, 8 on a GPU).
        num_workers: ``DataLoader`` processes decoding images.
        method_options: Options of a method given by name (e.g. ``prototypes``).
        checkpoint: Path of the model's checkpoint, recorded in the settings.
        rank: Shard index; default the ``torch.distributed`` rank (0 when not distributed).
        world_size: Number of shards; default the ``torch.distributed`` world size.
        channels_last: Run convolutions in channels-last layout (same maps up to float
            rounding; measured faster on CPU, see ``benchmarks/README.md``).
        progress: Show progress (rank 0 only).
        restart: Delete the maps of an output folder made with other settings (or without a
            settings record) instead of refusing it.
        max_pixels: Input pixels per forward call (flipped copies included); None: per
            device (:func:`~wsss.maps.tta.default_max_pixels`: 0.25 Mpx on the CPU, where
            larger batches are slower, 3 Mpx on a GPU).
        max_input_megapixels: Refuse, before computing it, an image whose largest scaled
            input exceeds this many megapixels (None: no cap); see
            :func:`~wsss.maps.tta.check_input_size` for the memory a map needs.

    Raises:
        ConfigError: Bad settings, or an output folder made with other settings.
        DataError: An image or label that cannot be read, or an image over the size cap.
    """
    if classes not in ("gt", "predicted"):
        raise ConfigError(f"classes must be 'gt' or 'predicted', got {classes!r}")
    if (batch_size is not None and batch_size < 1) or num_workers < 0:
        raise ConfigError(
            f"batch_size must be ≥ 1 and num_workers ≥ 0 ({batch_size}, {num_workers})"
        )
    method = _as_method(method, method_options)
    folders = output_folders(method, out)
    method = method.restrict(list(folders))
    _check_model(method, model)
    labelled = classes == "gt" and not method.class_agnostic
    model_classes = getattr(model, "num_classes", None)
    if labelled and model_classes is not None and model_classes != dataset.num_classes:
        raise ConfigError(
            f"the model has {model_classes} classes but dataset {dataset.root} has "
            f"{dataset.num_classes}; use the checkpoint trained on this dataset"
        )
    method.check(model, getattr(dataset, "classes", None))
    info = dist_info()
    distributed = info.enabled
    rank = info.rank if rank is None else rank
    world_size = info.world_size if world_size is None else world_size
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batch_size = default_batch_size(device) if batch_size is None else batch_size

    start = time.perf_counter()
    stores = {name: MapStore(folder) for name, folder in folders.items()}
    common = {
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "scales": [float(s) for s in scales],
        "classes": "agnostic" if method.class_agnostic else classes,
        "split": getattr(dataset, "split", None),
        **method.settings(),
    }
    # Rank 0 records the settings before any rank writes a map.
    error = None
    if rank == 0 or not distributed:
        try:
            for name, store in stores.items():
                store.claim({"method": name, **common}, restart=restart)
        except WsssError as e:
            error = e
    raise_if_any_failed(
        error, distributed, "another rank refused the output folder (see its message)"
    )

    share = range(rank, len(dataset), world_size)
    pending = [i for i in share if not all(s.has(dataset.ids[i]) for s in stores.values())]
    model.to(device).eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = DataLoader(
        _Images(dataset, pending, labels=labelled),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_as_list,
    )
    tta = {
        "scales": scales,
        "device": device,
        "amp": amp,
        "max_pixels": max_pixels,
    }
    bar = progress_bar(
        total=len(pending), desc=f"{method.name} maps", enabled=progress and rank == 0, unit="img"
    )
    with bar:
        for items in loader:
            for item in items:
                if "error" in item:
                    raise item["error"]
                size = tuple(item["image"].shape[-2:])
                check_input_size(size, scales, max_input_megapixels, where=item["id"])
            if labelled:
                wanted = [
                    _label_classes(it["id"], it["label"], dataset.num_classes) for it in items
                ]
            else:
                wanted = [None] * len(items)
            maps = method.compute(model, [it["image"] for it in items], wanted, **tta)
            for item, item_maps in zip(items, maps, strict=True):
                for name, store in stores.items():
                    store.save(item["id"], item_maps[name])
            bar.update(len(items))

    if distributed:
        dist.barrier()
    complete = all(store.path(i).is_file() for store in stores.values() for i in dataset.ids)
    if complete and (rank == 0 or not distributed):
        for store in stores.values():
            store.finish(len(dataset))
    if distributed:
        dist.barrier()  # every rank returns with the folders marked
    return MapsRunResult(
        outputs=folders,
        written=len(pending),
        skipped=len(share) - len(pending),
        complete=complete,
        seconds=time.perf_counter() - start,
    )
