"""Training samples of the saliency tasks: images with C²AM-H hint maps, saliency masks.

C²AM-H hints (P-NOC §4) come from any class-map folder (CAM, LPCAM, a P-NOC run): the hint map
of an image is :func:`~wsss.train.ccam_losses.hint_prior` of its maps (the maximum over its
classes, full resolution). It must follow the image through the augmentation exactly:
:class:`HintTransform` applies the image's resize (bilinear for the map), flip and crop to it
and pads it with 0 (no hint) where the crop pads the image.

Saliency detectors train on pseudo-saliency PNGs (255 salient, 0 background):
:class:`SaliencyMaskView` presents them as the dataset's masks with ids 1 and 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from wsss.data.base import SegmentationDataset
from wsss.data.loader import ClassificationDataset, WorkerError
from wsss.data.transforms import TrainTransform, normalize, random_crop, to_tensor
from wsss.errors import ConfigError, DataError
from wsss.io.maps import MapStore
from wsss.io.masks import MaskStore
from wsss.train.ccam_losses import hint_prior

__all__ = [
    "HintBatch",
    "HintCollate",
    "HintDataset",
    "HintTransform",
    "SaliencyMaskView",
    "check_hint_folder",
]


class HintTransform(TrainTransform):
    """:class:`~wsss.data.transforms.TrainTransform` that carries a float hint map along.

    The image goes through exactly the parent's steps and random draws (same seed, same
    output); the ``H×W`` hint map gets the same geometry: resized bilinearly to the image's
    new size, flipped with it, cropped at the same offsets (stacked with the image for the
    crop) and padded with 0. Colour augmentations and cutout touch the image only.
    """

    def __call__(
        self, image: np.ndarray, hint: np.ndarray | None = None, seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment one image and its hint map.

        Args:
            image: ``H×W×3`` ``uint8`` RGB.
            hint: ``H×W`` float hint map in [0, 1], or None.
            seed: Seed of every random draw (None: fresh entropy).

        Returns:
            ``3×S×S`` normalised ``float32`` image and ``S×S`` ``float32`` hint (or None).
        """
        rng = np.random.default_rng(seed)
        img = to_tensor(image)
        h, w = img.shape[-2:]
        hnt = None
        if hint is not None:
            hint = np.asarray(hint, dtype=np.float32)
            if hint.shape != (h, w):
                raise DataError(f"hint map of size {hint.shape} for an image of size {(h, w)}")
            hnt = torch.from_numpy(np.ascontiguousarray(hint))[None]
        # The same draws, in the same order, as TrainTransform.__call__.
        long_side = int(rng.integers(self.resize_long[0], self.resize_long[1] + 1))
        scale = long_side / max(h, w)
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        img = TF.resize(img, size, InterpolationMode.BICUBIC, antialias=True)
        if hnt is not None:
            hnt = TF.resize(hnt, size, InterpolationMode.BILINEAR, antialias=True)
        if self.hflip and rng.random() < 0.5:
            img = TF.horizontal_flip(img)
            hnt = None if hnt is None else TF.horizontal_flip(hnt)
        if self.jitter is not None or self.randaugment is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**63)))
                if self.jitter is not None:
                    img = self.jitter(img)
                if self.randaugment is not None:
                    img = self.randaugment(img)
            if self.randaugment is not None:
                img = self._cutout(img, rng)
        img = normalize(img)
        if hnt is None:
            img, _ = random_crop(img, None, self.crop_size, rng)
            return img, None
        both, _ = random_crop(torch.cat([img, hnt.clamp(0, 1)]), None, self.crop_size, rng)
        return both[:3], both[3]


def check_hint_folder(folder: str | os.PathLike, dataset: SegmentationDataset) -> MapStore:
    """The :class:`~wsss.io.maps.MapStore` of ``folder`` after checking it covers ``dataset``.

    Raises:
        ConfigError: The folder does not exist.
        DataError: Images of the training split have no hint file (the message names the
            folder, how many are missing and the first ids).
    """
    store = MapStore(folder)
    if not store.root.is_dir():
        raise ConfigError(
            f"train.strategy_args.hints: {store.root} is not a folder of class maps; make one "
            f"with `wsss maps` (CAM, LPCAM or any trained classifier) on the training split"
        )
    present = set(store.ids())
    missing = [i for i in dataset.ids if i not in present]
    if missing:
        raise DataError(
            f"{store.root}: no hint maps for {len(missing)} of the {len(dataset)} training "
            f"images (e.g. {', '.join(missing[:3])}); compute the class maps of the training "
            f"split {dataset.split!r} into this folder",
            path=store.root,
            kind="missing maps",
        )
    return store


class HintDataset(ClassificationDataset):
    """Training samples for C²AM: ``{"image", "hint", "id", "index", "seed"}``.

    Args:
        dataset: The training split.
        transform: A :class:`HintTransform`.
        hints: Folder of class maps giving each image's hint map, or None (plain C²AM:
            ``"hint"`` is None).
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        transform: HintTransform,
        hints: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(dataset, transform)
        self.hints = None if hints is None else MapStore(hints)

    def load_hint(self, sample_id: str) -> np.ndarray | None:
        """The full-resolution hint map of ``sample_id`` (None without a hint folder)."""
        if self.hints is None:
            return None
        return hint_prior(self.hints.load(sample_id))

    def _load(self, item: int | tuple[int, int]) -> dict:
        index, seed = item if isinstance(item, tuple) else (item, None)
        sample_id = self.dataset.ids[index]
        image = self.dataset.load_image(sample_id)
        hint = self.load_hint(sample_id)
        if hint is not None and hint.shape != image.shape[:2]:
            raise DataError(
                f"{self.hints.path(sample_id)}: maps of size {hint.shape} but the image "
                f"{sample_id!r} is {image.shape[:2]}; were they computed on another dataset?",
                path=self.hints.path(sample_id),
                kind="bad maps",
            )
        image_t, hint_t = self.transform(image, hint, seed)
        return {"image": image_t, "hint": hint_t, "id": sample_id, "index": index, "seed": seed}


@dataclass
class HintBatch:
    """A C²AM training batch.

    Attributes:
        images: ``B×3×S×S`` normalised ``float32``.
        hints: ``B×S×S`` ``float32`` hint maps aligned with the images, or None.
        ids: Sample ids.
        indices: ``(B,)`` ``int64`` dataset indices.
    """

    images: torch.Tensor
    hints: torch.Tensor | None
    ids: list[str]
    indices: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> HintBatch:
        """The batch with its tensors on ``device``."""
        return replace(
            self,
            images=self.images.to(device, non_blocking=non_blocking),
            hints=None if self.hints is None else self.hints.to(device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return len(self.ids)


class HintCollate:
    """Stack :class:`HintDataset` samples into a :class:`HintBatch` (no batch mixing)."""

    def __call__(self, samples: list[dict | WorkerError]) -> HintBatch | WorkerError:
        for sample in samples:
            if isinstance(sample, WorkerError):
                return sample
        hints = [s["hint"] for s in samples]
        return HintBatch(
            images=torch.stack([s["image"] for s in samples]),
            hints=None if hints[0] is None else torch.stack(hints),
            ids=[s["id"] for s in samples],
            indices=torch.tensor([s["index"] for s in samples], dtype=torch.int64),
        )


class SaliencyMaskView(SegmentationDataset):
    """A split whose masks are pseudo-saliency PNGs: 255 → 1 (salient), 0 → 0.

    Images and labels come from ``dataset``. Any other value in a mask file is a
    :class:`~wsss.errors.DataError` naming the file.

    Args:
        dataset: The split.
        masks: Folder of ``<id>.png`` pseudo-saliency masks (``wsss saliency pseudo``).
    """

    def __init__(self, dataset: SegmentationDataset, masks: str | os.PathLike) -> None:
        self.dataset = dataset
        self.store = MaskStore(masks)
        self.root: Path = dataset.root
        self.split = dataset.split
        self.classes = list(dataset.classes)
        self.ids = list(dataset.ids)

    def load_image(self, sample_id: str) -> np.ndarray:
        return self.dataset.load_image(sample_id)

    def load_label(self, sample_id: str) -> np.ndarray:
        return self.dataset.load_label(sample_id)

    def load_mask(self, sample_id: str) -> np.ndarray:
        mask = self.store.load(sample_id)
        bad = (mask != 0) & (mask != 255)
        if bad.any():
            path = self.store.path(sample_id)
            raise DataError(
                f"{path}: a pseudo-saliency mask holds only 0 and 255, found "
                f"{int(mask[bad][0])}; is this a segmentation mask folder?",
                path=path,
                kind="bad mask",
            )
        return (mask == 255).astype(np.uint8)

    def __getattr__(self, name: str) -> Any:
        # Anything else (palette, parts) from the wrapped reader.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def check_mask_folder(folder: str | os.PathLike | None, dataset: SegmentationDataset) -> str:
    """``folder`` as a string, after checking it holds a mask for every image of ``dataset``.

    Raises:
        ConfigError: No folder given, or it does not exist.
        DataError: Images without a mask file.
    """
    if folder is None:
        raise ConfigError(
            "train.strategy_args.masks is not set: the saliency detector trains on a folder of "
            "pseudo-saliency PNGs (make them with `wsss saliency pseudo`)"
        )
    store = MaskStore(folder)
    if not store.root.is_dir():
        raise ConfigError(f"train.strategy_args.masks: {store.root} is not a folder of masks")
    present = set(store.ids())
    missing = [i for i in dataset.ids if i not in present]
    if missing:
        raise DataError(
            f"{store.root}: no pseudo-saliency mask for {len(missing)} of the {len(dataset)} "
            f"training images (e.g. {', '.join(missing[:3])})",
            path=store.root,
            kind="missing mask",
        )
    return str(folder)
