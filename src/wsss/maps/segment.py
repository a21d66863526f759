"""Segmentation inference over a whole split: one mask ``<id>.png`` per image (METHODS.md §8).

Each image goes through :func:`~wsss.maps.segmentation_infer.predict_segmentation` (4 scales ×
flip on logits, softmax, optional dense CRF with the DeepLab-v2 parameters, argmax) and its
mask is written as a palette PNG into a :class:`~wsss.io.masks.MaskStore`; with
``save_probs`` the class probabilities go to ``<out>/probs/<id>.npz`` too (key ``probs``,
``K×H×W`` ``float16``, compressed: about 1–3 MB per VOC image).

The folder records its settings in ``masks.json`` (``probs/probs.json``) before the first file
and is marked complete once every image of the split has its file. A rerun with the same
settings resumes (readable files are never recomputed); one with other settings, or into a
folder holding masks without a record, is refused unless ``restart``. Under
``torch.distributed`` rank ``r`` of ``world`` processes takes ``ids[r::world]``. The masks are
evaluated like any others: :func:`wsss.evaluate.evaluate` with ``masks_dir`` (``wsss eval
--masks``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from wsss.config.core import neutral
from wsss.data.base import SegmentationDataset
from wsss.data.transforms import to_tensor
from wsss.errors import ConfigError, DataError, WsssError
from wsss.io.atomic import atomic_path
from wsss.io.maps import check_sample_id
from wsss.io.masks import MaskStore
from wsss.io.records import RecordedFolder
from wsss.maps.segmentation_infer import (
    DEEPLAB_V2_CRF,
    SEGMENTATION_SCALES,
    CRFParams,
    predict_segmentation,
)
from wsss.maps.tta import default_max_pixels
from wsss.runtime import dist_info, progress_bar
from wsss.runtime.distributed import raise_if_any_failed

__all__ = ["ProbabilityStore", "SegmentConfig", "SegmentRunResult", "segment_split"]

PROBS_DIR = "probs"


@dataclass
class SegmentConfig:
    """Settings of segmentation inference (``wsss segment --set KEY=VALUE``).

    Attributes:
        scales: Test-time scales, each with its horizontal flip when ``flip`` (METHODS.md §8:
            0.5, 1.0, 1.5, 2.0).
        flip: Horizontal-flip TTA.
        crf: Refine the probabilities with the dense CRF (DeepLab-v2 parameters; needs the
            ``crf`` extra).
        probs: Also save the class probabilities (``probs/<id>.npz``).
        amp: float16 autocast on CUDA.
        batch_size: Images per call (equal sizes share forward passes).
        workers: Image-decoding processes (0: in this process).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``.
    """

    scales: tuple[float, ...] = SEGMENTATION_SCALES
    flip: bool = True
    crf: bool = False
    probs: bool = False
    amp: bool = True
    batch_size: int = neutral(1)
    workers: int = neutral(0)
    device: str = neutral("auto")

    def __post_init__(self) -> None:
        if not self.scales or not all(math.isfinite(s) and s > 0 for s in self.scales):
            raise ConfigError(f"scales must be positive numbers, got {list(self.scales)}")
        if self.batch_size < 1 or self.workers < 0:
            raise ConfigError(
                f"batch_size must be ≥ 1 and workers ≥ 0, got {self.batch_size}, {self.workers}"
            )


class ProbabilityStore(RecordedFolder):
    """A folder of ``<id>.npz`` class probabilities (key ``probs``, ``K×H×W`` ``float16``)."""

    suffix = ".npz"
    manifest_name = "probs.json"
    kind = "probability"

    def path(self, sample_id: str) -> Path:
        """The file of ``sample_id`` (which must be a plain name)."""
        return self.root / f"{check_sample_id(sample_id)}{self.suffix}"

    def has(self, sample_id: str) -> bool:
        """Whether ``sample_id`` has a readable file."""
        try:
            with np.load(self.path(sample_id), allow_pickle=False) as z:
                return "probs" in z.files
        except Exception:  # missing or truncated: recompute it
            return False

    def save(self, sample_id: str, probs: np.ndarray) -> None:
        with atomic_path(self.path(sample_id)) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, probs=np.asarray(probs, dtype=np.float16))

    def load(self, sample_id: str) -> np.ndarray:
        """The ``K×H×W`` probabilities of ``sample_id`` as ``float32``."""
        path = self.path(sample_id)
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["probs"].astype(np.float32)
        except FileNotFoundError:
            raise DataError(f"{path}: probability file not found", path=path) from None
        except Exception as e:
            raise DataError(f"{path}: unreadable probability file ({e})", path=path) from e


@dataclass
class SegmentRunResult:
    """Outcome of :func:`segment_split` on this process.

    Attributes:
        out_dir: Folder of the masks.
        written: Images computed by this process.
        skipped: Images of this process's share found complete.
        complete: Whether every image of the split now has its files (folders marked so).
        seconds: Wall time.
    """

    out_dir: Path
    written: int
    skipped: int
    complete: bool
    seconds: float


class _Images(Dataset):
    """Decodes images in loader workers; user errors travel back as values."""

    def __init__(self, dataset: SegmentationDataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample_id = self.dataset.ids[self.indices[i]]
        try:
            return {"id": sample_id, "image": to_tensor(self.dataset.load_image(sample_id))}
        except WsssError as e:
            return {"id": sample_id, "error": e}


def _as_list(batch: list) -> list:
    return batch


def _crf_params(crf: bool | CRFParams | None) -> CRFParams | None:
    if crf is True:
        return DEEPLAB_V2_CRF
    if crf is False or crf is None:
        return None
    if isinstance(crf, CRFParams):
        return crf
    raise ConfigError(f"crf must be true, false or CRFParams, got {crf!r}")


def _without(settings: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != key}


def segment_split(
    model: nn.Module,
    dataset: SegmentationDataset,
    out: str | os.PathLike,
    *,
    scales: Sequence[float] = SEGMENTATION_SCALES,
    flip: bool = True,
    crf: bool | CRFParams = False,
    save_probs: bool = False,
    device: torch.device | str | None = None,
    amp: bool = True,
    checkpoint: str | os.PathLike | None = None,
    batch_size: int = 1,
    num_workers: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    restart: bool = False,
    progress: bool = True,
    max_pixels: int | None = None,
) -> SegmentRunResult:
    """Predict and save the mask of every image of ``dataset`` missing in ``out``.

    Args:
        model: Segmentation network (``n×3×h×w`` → ``n×K×h×w`` logits, ``K = C + 1``); moved
            to ``device`` and set to eval mode.
        dataset: The split's images.
        out: Folder of the masks (``<id>.png``); probabilities go to ``out/probs``.
        scales: TTA scales (default 0.5, 1, 1.5, 2), each with its flip when ``flip``.
        flip: Horizontal-flip TTA.
        crf: Dense CRF on the probabilities: True for the DeepLab-v2 parameters, or a
            :class:`~wsss.refine.crf.CRFParams`. Needs pydensecrf.
        save_probs: Also save the class probabilities.
        device: Where the model runs; default its current device.
        amp: Autocast on CUDA.
        checkpoint: Path of the model's checkpoint, recorded in the settings.
        batch_size: Images per call (equal sizes share forward passes).
        num_workers: ``DataLoader`` processes decoding images.
        rank: Shard index; default the ``torch.distributed`` rank (0 when not distributed).
        world_size: Number of shards; default the ``torch.distributed`` world size.
        restart: Delete the files of a folder made with other settings (or without a record)
            instead of refusing it.
        progress: Show progress (rank 0 only).
        max_pixels: Cap on input pixels per forward pass; None: per device
            (:func:`~wsss.maps.tta.default_max_pixels`, smaller on the CPU).

    Raises:
        ConfigError: Bad settings, a model whose class count does not fit the dataset, or an
            output folder made with other settings.
        DataError: An image that cannot be read.
    """
    if batch_size < 1 or num_workers < 0:
        raise ConfigError(
            f"batch_size must be ≥ 1 and num_workers ≥ 0 ({batch_size}, {num_workers})"
        )
    params = _crf_params(crf)
    classes = getattr(model, "num_classes", None)
    if classes is not None and classes != dataset.num_classes + 1:
        raise ConfigError(
            f"the segmentation model predicts {classes} classes but dataset {dataset.root} has "
            f"{dataset.num_classes} + background; use the checkpoint trained on this dataset"
        )
    info = dist_info()
    distributed = info.enabled
    rank = info.rank if rank is None else rank
    world_size = info.world_size if world_size is None else world_size
    device = torch.device(device) if device is not None else next(model.parameters()).device
    max_pixels = default_max_pixels(device) if max_pixels is None else max_pixels

    start = time.perf_counter()
    masks = MaskStore(out)
    probs = ProbabilityStore(Path(out) / PROBS_DIR) if save_probs else None
    settings = {
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "scales": [float(s) for s in scales],
        "flip": bool(flip),
        # gt_prob belongs to label unaries; probability unaries do not use it.
        "crf": None if params is None else _without(dataclasses.asdict(params), "gt_prob"),
        "split": getattr(dataset, "split", None),
        "classes": list(getattr(dataset, "class_names", [])),
    }
    error = None
    if rank == 0 or not distributed:  # rank 0 records the settings before any rank writes
        try:
            masks.claim(settings, restart=restart)
            if probs is not None:
                probs.claim(settings, restart=restart)
        except WsssError as e:
            error = e
    raise_if_any_failed(
        error, distributed, "another rank refused the output folder (see its message)"
    )

    stores: list[MaskStore | ProbabilityStore] = [masks] + ([probs] if probs else [])
    share = range(rank, len(dataset), world_size)
    pending = [i for i in share if not all(s.has(dataset.ids[i]) for s in stores)]
    model.to(device).eval()
    loader = DataLoader(
        _Images(dataset, pending),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_as_list,
    )
    bar = progress_bar(
        total=len(pending), desc="segmentation", enabled=progress and rank == 0, unit="img"
    )
    with bar:
        for items in loader:
            for item in items:
                if "error" in item:
                    raise item["error"]
            predictions = predict_segmentation(
                model,
                [it["image"] for it in items],
                scales,
                flip=flip,
                crf=params or False,
                device=device,
                amp=amp,
                max_pixels=max_pixels,
            )
            for item, pred in zip(items, predictions, strict=True):
                if probs is not None:
                    probs.save(item["id"], pred.probs)
                masks.save(item["id"], pred.mask)
            bar.update(len(items))

    if distributed:
        dist.barrier()
    complete = all(s.path(i).is_file() for s in stores for i in dataset.ids)
    if complete and (rank == 0 or not distributed):
        for store in stores:
            store.finish(len(dataset))
    if distributed:
        dist.barrier()  # every rank returns with the folders marked
    return SegmentRunResult(
        out_dir=Path(out),
        written=len(pending),
        skipped=len(share) - len(pending),
        complete=complete,
        seconds=time.perf_counter() - start,
    )
