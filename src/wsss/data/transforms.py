"""Image transforms for classifier training and inference (METHODS.md §1).

Training: random long-side resize (bicubic), horizontal flip, optional colour jitter and
RandAugment (+ a 16-px cutout) on ``uint8`` pixels, ImageNet normalisation, then a random crop
padded with 0 (the mean colour after normalisation; masks are padded with 255). MixUp and
CutMix act on whole batches (:class:`BatchMix`). Inference: normalisation only.

Every random draw comes from an explicit seed, so a sample's augmentation depends only on its
seed: not on worker processes, on the order samples are loaded, or on an interrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from wsss.data.base import IGNORE_INDEX
from wsss.errors import ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchMix",
    "EvalTransform",
    "TrainTransform",
    "denormalize",
    "normalize",
    "random_crop",
    "to_tensor",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CUTOUT_SIZE = 16
CUTOUT_FILL = 127  # grey, as in the RandAugment + cutout of the FixMatch family


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``H×W×3`` ``uint8`` array → ``3×H×W`` ``uint8`` tensor."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H×W×3 uint8 RGB image, got {image.dtype} {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """``uint8`` RGB (``…×3×H×W``) → ImageNet-normalised ``float32``."""
    return TF.normalize(TF.to_dtype(image, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`, back to ``uint8`` RGB (for visualisation)."""
    mean = image.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def random_crop(
    image: torch.Tensor,
    mask: torch.Tensor | None,
    size: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random ``size×size`` crop; a side shorter than ``size`` is padded around the image.

    Along each axis, a longer image is cropped at a random offset and a shorter one is placed
    at a random offset inside the padded canvas (image padding 0, mask padding 255), as in the
    reference implementations.
    """
    h, w = image.shape[-2:]
    ch, cw = min(size, h), min(size, w)
    src_y, dst_y = _offsets(h, size, rng)
    src_x, dst_x = _offsets(w, size, rng)
    out = image.new_zeros((*image.shape[:-2], size, size))
    out[..., dst_y : dst_y + ch, dst_x : dst_x + cw] = image[
        ..., src_y : src_y + ch, src_x : src_x + cw
    ]
    if mask is None:
        return out, None
    out_mask = mask.new_full((*mask.shape[:-2], size, size), IGNORE_INDEX)
    out_mask[..., dst_y : dst_y + ch, dst_x : dst_x + cw] = mask[
        ..., src_y : src_y + ch, src_x : src_x + cw
    ]
    return out, out_mask


def _offsets(length: int, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """(source offset, destination offset) along one axis."""
    space = length - size
    if space > 0:
        return int(rng.integers(space + 1)), 0
    return 0, int(rng.integers(-space + 1))


class TrainTransform:
    """The training augmentation of METHODS.md §1 for one image (and optionally its mask).

    Args:
        crop_size: Side of the square output.
        resize_long: The long side is resized to a random integer in ``[min, max]``.
        hflip: Flip horizontally with probability 0.5.
        randaugment: torchvision RandAugment (2 ops, magnitude 10) and a 16-px cutout.
        color_jitter: Colour jitter (brightness, contrast, saturation 0.3, hue 0.1).
    """

    def __init__(
        self,
        crop_size: int,
        resize_long: Sequence[int] = (320, 640),
        hflip: bool = True,
        randaugment: bool = False,
        color_jitter: bool = False,
    ) -> None:
        lo, hi = (int(v) for v in resize_long)
        if not 0 < lo <= hi:
            raise ConfigError(
                f"data.resize_long must be [min, max] with 0 < min <= max, got {resize_long}"
            )
        if crop_size <= 0:
            raise ConfigError(f"data.crop_size must be positive, got {crop_size}")
        self.crop_size = crop_size
        self.resize_long = (lo, hi)
        self.hflip = hflip
        self.jitter = v2.ColorJitter(0.3, 0.3, 0.3, 0.1) if color_jitter else None
        self.randaugment = v2.RandAugment(num_ops=2, magnitude=10) if randaugment else None

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None = None, seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment one sample.

        Args:
            image: ``H×W×3`` ``uint8`` RGB.
            mask: Optional ``H×W`` ``uint8`` mask, transformed geometrically alongside.
            seed: Seed of every random draw (None: fresh entropy).

        Returns:
            ``3×S×S`` normalised ``float32`` image and ``S×S`` ``uint8`` mask (or None).
        """
        rng = np.random.default_rng(seed)
        img = to_tensor(image)
        msk = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))[None]
        h, w = img.shape[-2:]
        long_side = int(rng.integers(self.resize_long[0], self.resize_long[1] + 1))
        scale = long_side / max(h, w)
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        img = TF.resize(img, size, InterpolationMode.BICUBIC, antialias=True)
        if msk is not None:
            msk = TF.resize(msk, size, InterpolationMode.NEAREST_EXACT)
        if self.hflip and rng.random() < 0.5:
            img = TF.horizontal_flip(img)
            msk = None if msk is None else TF.horizontal_flip(msk)
        if self.jitter is not None or self.randaugment is not None:
            # torchvision samples from torch's global generator: fork it so augmentation is a
            # function of ``seed`` alone and the training loop's random stream is untouched.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**63)))
                if self.jitter is not None:
                    img = self.jitter(img)
                if self.randaugment is not None:
                    img = self.randaugment(img)
            if self.randaugment is not None:
                img = self._cutout(img, rng)
        img, msk = random_crop(normalize(img), msk, self.crop_size, rng)
        return img, None if msk is None else msk[0]

    @staticmethod
    def _cutout(img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, x0 = max(0, cy - CUTOUT_SIZE // 2), max(0, cx - CUTOUT_SIZE // 2)
        y1, x1 = min(h, y0 + CUTOUT_SIZE), min(w, x0 + CUTOUT_SIZE)
        fill = torch.full((3, 1, 1), CUTOUT_FILL, dtype=img.dtype)
        return TF.erase(img, y0, x0, y1 - y0, x1 - x0, fill)


class EvalTransform:
    """Inference transform: ImageNet normalisation only, at the image's own size."""

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None = None, seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``3×H×W`` normalised ``float32`` image and the mask as a tensor (or None)."""
        msk = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))
        return normalize(to_tensor(image)), msk


class BatchMix:
    """MixUp / CutMix on a batch of images with multi-hot labels (and optionally masks).

    MixUp blends two images with weight λ ~ Beta(α, α); CutMix pastes a box of area ≈ (1−λ)
    from the partner image and recomputes λ from the box actually pasted. Labels are mixed by
    the same weight: ``λ·y + (1−λ)·y[perm]``. Masks follow CutMix (the same box is pasted from
    the partner's mask); MixUp cannot blend hard masks and refuses them. New tensors are
    returned; inputs are never modified (cached labels stay intact).

    Args:
        mixup_alpha: MixUp α (0 disables MixUp).
        cutmix_alpha: CutMix α (0 disables CutMix).
        prob: Probability of mixing a batch at all.
    """

    def __init__(
        self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0
    ) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0 or not 0 <= prob <= 1:
            raise ConfigError("mixup/cutmix alpha must be >= 0 and mix_prob in [0, 1]")
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob

    @property
    def enabled(self) -> bool:
        """Whether any mixing can happen."""
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix ``images`` (``B×3×H×W``) and ``labels`` (``B×C``) with draws from ``rng``."""
        images, labels, _ = self.mix(images, labels, rng)
        return images, labels

    def mix(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        rng: np.random.Generator,
        masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Mix images, labels and ``B×H×W`` masks (or None) with the same draws as ``__call__``.

        Raises:
            ConfigError: MixUp was drawn for a batch with masks.
        """
        if not self.enabled or images.shape[0] < 2 or rng.random() >= self.prob:
            return images, labels, masks
        perm = torch.from_numpy(rng.permutation(images.shape[0]))
        modes = [
            m for m, a in (("mixup", self.mixup_alpha), ("cutmix", self.cutmix_alpha)) if a > 0
        ]
        mode = modes[int(rng.integers(len(modes)))]
        if mode == "mixup":
            if masks is not None:
                raise ConfigError(
                    "MixUp cannot blend hard masks: set train.augment.mixup_alpha=0 when training "
                    "on masks (CutMix pastes them)"
                )
            lam = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
            mixed = lam * images + (1 - lam) * images[perm]
        else:
            lam = float(rng.beta(self.cutmix_alpha, self.cutmix_alpha))
            h, w = images.shape[-2:]
            cut = np.sqrt(1.0 - lam)
            ch, cw = int(h * cut), int(w * cut)
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
            y0, y1 = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
            x0, x1 = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
            mixed = images.clone()
            mixed[..., y0:y1, x0:x1] = images[perm][..., y0:y1, x0:x1]
            if masks is not None:
                masks = masks.clone()
                masks[..., y0:y1, x0:x1] = masks[perm][..., y0:y1, x0:x1]
            lam = 1.0 - float((y1 - y0) * (x1 - x0)) / (h * w)
        return mixed, lam * labels + (1 - lam) * labels[perm], masks
