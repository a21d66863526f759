"""Classification-training batches from any :class:`~wsss.data.base.SegmentationDataset`.

:class:`SeededSampler` fixes, per epoch, the order of the samples and one seed per sample; the
dataset wrapper augments each sample from its own seed. A run therefore sees the same batches
whatever the number of workers, and a resumed run continues exactly where it stopped.

A :class:`~wsss.errors.WsssError` raised in a loader worker (an unreadable image) travels back
as a value and is raised again as it was in the main process, without the worker's traceback
that torch would otherwise wrap around it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from wsss.data.base import SegmentationDataset
from wsss.data.transforms import BatchMix
from wsss.errors import WsssError

__all__ = [
    "Batch",
    "ClassificationDataset",
    "Collate",
    "SeededSampler",
    "WorkerError",
    "build_train_loader",
    "seed_worker",
]


@dataclass
class Batch:
    """A training batch.

    Attributes:
        images: ``B×3×H×W`` normalised ``float32``.
        labels: ``B×C`` ``float32`` image labels (soft after MixUp/CutMix).
        ids: Sample ids.
        indices: ``(B,)`` ``int64`` dataset indices.
        masks: ``B×H×W`` ``uint8`` masks (ground truth or pseudo masks) when the samples
            have them, else None; CutMix pastes them with the images.
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    indices: torch.Tensor
    masks: torch.Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch with its tensors on ``device``."""
        return replace(
            self,
            images=self.images.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            masks=None if self.masks is None else self.masks.to(device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class WorkerError:
    """A user error raised in a loader worker, returned in place of a sample or a batch."""

    error: WsssError


class ClassificationDataset(Dataset):
    """Wraps a segmentation dataset for classifier training.

    Items are ``dataset[(index, seed)]`` (as produced by :class:`SeededSampler`) or a plain
    index (fresh randomness). Each item is a dict with ``image``, ``label``, ``id``, ``index``,
    ``seed`` and, with ``with_masks``, ``mask``. In a loader worker, a ``WsssError`` is
    returned as a :class:`WorkerError` (see :func:`build_train_loader`).

    Args:
        dataset: The reader.
        transform: ``transform(image, mask, seed) -> (image_tensor, mask_tensor | None)``.
        with_masks: Also load and transform ground-truth masks.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        transform: Callable,
        with_masks: bool = False,
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.with_masks = with_masks

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int | tuple[int, int]) -> dict | WorkerError:
        try:
            return self._load(item)
        except WsssError as e:
            if get_worker_info() is None:
                raise
            return WorkerError(e)

    def _load(self, item: int | tuple[int, int]) -> dict:
        index, seed = item if isinstance(item, tuple) else (item, None)
        sample_id = self.dataset.ids[index]
        image = self.dataset.load_image(sample_id)
        mask = self.dataset.load_mask(sample_id) if self.with_masks else None
        image_t, mask_t = self.transform(image, mask, seed)
        # A fresh copy: batch mixing must never reach a reader's cached label array.
        label = torch.tensor(self.dataset.load_label(sample_id), dtype=torch.float32)
        out = {"image": image_t, "label": label, "id": sample_id, "index": index, "seed": seed}
        if self.with_masks:
            out["mask"] = mask_t
        return out


class SeededSampler(Sampler[tuple[int, int]]):
    """Epoch-seeded order and per-sample seeds, sharded over DDP ranks, resumable.

    The permutation and the sample seeds of epoch ``e`` are drawn from ``(seed, e)``. Like
    :class:`~torch.utils.data.DistributedSampler`, the order is padded by repetition to a
    multiple of ``world_size`` and rank ``r`` takes every ``world_size``-th entry from ``r``.

    Args:
        num_samples: Dataset length.
        seed: Base seed.
        shuffle: Permute each epoch (else dataset order).
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch; ``skip`` drops the first items of this rank's share (resume)."""
        self.epoch = epoch
        self.skip = skip

    def shard_size(self) -> int:
        """Items per rank per epoch, before skipping."""
        return -(-self.num_samples // self.world_size)

    def __len__(self) -> int:
        return max(0, self.shard_size() - self.skip)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_samples) if self.shuffle else np.arange(self.num_samples)
        seeds = rng.integers(0, 2**63 - 1, size=self.num_samples, dtype=np.int64)
        total = self.shard_size() * self.world_size
        positions = np.resize(np.arange(self.num_samples), total)[self.rank :: self.world_size]
        for pos in positions[self.skip :]:
            yield int(order[pos]), int(seeds[pos])


class Collate:
    """Stack samples into a :class:`Batch`, then apply batch mixing when configured.

    The mixing draws are seeded from the batch's sample seeds, so they are reproducible too.
    Masks, when the samples have them, follow CutMix; MixUp refuses them (``ConfigError``).
    """

    def __init__(self, mix: BatchMix | None = None) -> None:
        self.mix = mix

    def __call__(self, samples: list[dict | WorkerError]) -> Batch | WorkerError:
        for sample in samples:
            if isinstance(sample, WorkerError):
                return sample
        images = torch.stack([s["image"] for s in samples])
        labels = torch.stack([s["label"] for s in samples])
        masks = torch.stack([s["mask"] for s in samples]) if "mask" in samples[0] else None
        if self.mix is not None and self.mix.enabled:
            seeds = [s["seed"] for s in samples]
            rng = np.random.default_rng(None if None in seeds else seeds)
            images, labels, masks = self.mix.mix(images, labels, rng, masks)
        return Batch(
            images=images,
            labels=labels,
            ids=[s["id"] for s in samples],
            indices=torch.tensor([s["index"] for s in samples], dtype=torch.int64),
            masks=masks,
        )


class _TrainLoader(DataLoader):
    """A DataLoader that raises a worker's :class:`WorkerError` as the original error."""

    def __iter__(self) -> Iterator[Batch]:
        for batch in super().__iter__():
            if isinstance(batch, WorkerError):
                raise batch.error
            yield batch


def seed_worker(worker_id: int) -> None:
    """Seed python and numpy in a worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_train_loader(
    dataset: Dataset,
    sampler: SeededSampler,
    batch_size: int,
    num_workers: int = 0,
    mix: BatchMix | None = None,
    pin_memory: bool = False,
    collate: Callable[[list], object] | None = None,
) -> DataLoader:
    """A loader of full batches (``drop_last``) in the sampler's order.

    ``collate`` turns a list of samples into a batch (default: :class:`Collate` with ``mix``;
    it must pass a :class:`WorkerError` through). A ``WsssError`` raised in a worker is raised
    again unchanged in the main process.
    """
    generator = torch.Generator().manual_seed(sampler.seed)
    return _TrainLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        collate_fn=Collate(mix) if collate is None else collate,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=generator,  # keeps DataLoader from drawing on torch's global generator
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
