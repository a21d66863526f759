"""Multi-scale + flip test-time augmentation for dense maps (METHODS.md §3).

For every scale ``s`` the image is resized to ``(round(H·s), round(W·s))`` (bicubic), the pair
``[x_s, hflip(x_s)]`` goes through the network in one batch, the flipped output is flipped back
and both are merged into the map of that scale (``a + b`` by default). The maps of all scales
are upsampled (bilinear) and summed twice: onto the stride-4 grid ``strided(4)`` and onto
``strided_up16``, which is then cropped to ``H×W``.

Resampling follows the published code (IRN, Puzzle-CAM, P-NOC): images are resized as ``uint8``
with PIL's bicubic filter (antialiased when shrinking), reproduced here by torch's ``uint8``
antialiased bicubic kernel (it differs from PIL by one grey level on under 1 % of the pixels);
maps are upsampled with ``F.interpolate(..., mode="bilinear", align_corners=False)``, the
reference's ``align_corners``.

The network-specific parts are two callables: ``forward`` (a normalised batch to per-pixel
outputs, e.g. ReLU'd class maps or backbone features) and ``merge`` (the pair of outputs to the
map of one scale). CAM, LPCAM and saliency inference differ only in these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsss.data.transforms import normalize
from wsss.errors import ConfigError, DataError
from wsss.io.maps import ClassMaps

__all__ = [
    "BYTES_PER_INPUT_PIXEL",
    "CPU_MAX_PIXELS",
    "DEFAULT_MAX_INPUT_MEGAPIXELS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SCALES",
    "as_image_tensor",
    "check_input_size",
    "class_maps_by_size",
    "default_max_pixels",
    "largest_input",
    "multiscale_flip",
    "normalize_maps",
    "resize_image",
    "scaled_size",
    "size_groups",
    "strided_size",
    "strided_up_size",
]

DEFAULT_SCALES = (1.0, 0.5, 1.5, 2.0)
# Largest network input (one image at its largest scale) accepted by default: a 10 Mpx image
# at scale 2. Past it an image is refused before any work (see ``check_input_size``).
DEFAULT_MAX_INPUT_MEGAPIXELS = 40.0
# Peak memory per pixel of the largest network input, measured on the CPU as the rise of the
# peak resident memory while one image got its maps (default scales and settings, two
# classes; benchmarks/README.md "Memory"): ResNet-50 OS16 about 300 bytes (1.2 GB per image
# megapixel at scale 2), ResNet-10t OS8 about 225 bytes (0.9 GB); plus about 0.3 GB once.
BYTES_PER_INPUT_PIXEL = 300
# Input pixels per forward call (flipped copies included) on a GPU: two 500×375 VOC images at
# scale 2 with their flips (3 Mpx).
DEFAULT_MAX_PIXELS = 3_000_000
# On the CPU, batching inputs saves time only while they are small: on one thread an image
# and its flip in one call are 5–75 % faster than apart below ~0.1 Mpx each, and 5–13 %
# slower from ~0.19 Mpx (ResNet-10t and ResNet-50, channels-last; benchmarks/README.md).
CPU_MAX_PIXELS = 250_000

Forward = Callable[[torch.Tensor], torch.Tensor]
Merge = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def strided_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """``(ceil(H/stride), ceil(W/stride))``."""
    return (-(-size[0] // stride), -(-size[1] // stride))


def strided_up_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """``size`` rounded up to multiples of ``stride``."""
    h, w = strided_size(size, stride)
    return h * stride, w * stride


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``(round(H·s), round(W·s))`` with Python's (half-to-even) rounding, as the reference."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def as_image_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """An ``H×W×3`` ``uint8`` array or a ``3×H×W`` / ``N×3×H×W`` ``uint8`` tensor, as a tensor."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB array, got {image.dtype} {image.shape}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if image.dtype != torch.uint8 or image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(
            f"expected a 3×H×W or N×3×H×W uint8 tensor, got {image.dtype} {tuple(image.shape)}"
        )
    return image


def resize_image(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of ``uint8`` images (``…×3×H×W``) like PIL's ``Image.resize(BICUBIC)``.

    Runs on the CPU, where torch has the exact ``uint8`` kernel; the result stays on the CPU.
    """
    if tuple(images.shape[-2:]) == tuple(size):
        return images.cpu()
    batch = images.cpu().reshape(-1, *images.shape[-3:])
    out = F.interpolate(batch, size=size, mode="bicubic", align_corners=False, antialias=True)
    return out.reshape(*images.shape[:-2], *size)


def size_groups(sizes: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Indices of equal ``sizes`` grouped together, groups in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(i)
    return list(groups.values())


def normalize_maps(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Divide each ``h×w`` map (last two dimensions) by its maximum plus ``eps``.

    Maps are expected non-negative; an all-zero map stays zero.
    """
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + eps)


def largest_input(size: tuple[int, int], scales: Sequence[float]) -> tuple[float, tuple[int, int]]:
    """The scale giving the largest network input for an image of ``size``, and that input size."""
    scale = max(scales)
    return scale, scaled_size(size, scale)


def check_input_size(
    size: tuple[int, int],
    scales: Sequence[float],
    max_megapixels: float | None = DEFAULT_MAX_INPUT_MEGAPIXELS,
    where: str = "image",
) -> None:
    """Refuse an image whose largest scaled input would exceed ``max_megapixels``.

    The maps of an image need about ``BYTES_PER_INPUT_PIXEL`` bytes per pixel of its largest
    scaled input (1.2 GB per megapixel of image at scale 2 for a ResNet-50 on the CPU), so a
    photo of 6000×4000 pixels with the default scales needs about 29 GB; this fails at once
    instead of after minutes.

    Raises:
        DataError: The message names ``where``, the sizes, the memory estimate and the setting.
    """
    if max_megapixels is None:
        return
    scale, (h, w) = largest_input(size, scales)
    if h * w <= max_megapixels * 1e6:
        return
    gigabytes = h * w * BYTES_PER_INPUT_PIXEL / 1e9
    raise DataError(
        f"{where}: image of {size[1]}×{size[0]} pixels is {w}×{h} ({h * w / 1e6:.3g} Mpx) at "
        f"scale {scale:g}, above max_input_megapixels={max_megapixels:g}; its maps would "
        f"need about {gigabytes:.0f} GB of memory (ResNet-50). Raise max_input_megapixels "
        "(--max-input-megapixels) if the memory is there, use smaller --scales, or "
        "downscale the image",
        kind="image too large",
    )


def default_max_pixels(device: torch.device | str) -> int:
    """Input pixels per forward call when not set: :data:`CPU_MAX_PIXELS` on the CPU,
    :data:`DEFAULT_MAX_PIXELS` elsewhere (a GPU needs batches to be busy)."""
    return CPU_MAX_PIXELS if torch.device(device).type == "cpu" else DEFAULT_MAX_PIXELS


def _add_pair_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a + b


def multiscale_flip(
    forward: Forward,
    image: torch.Tensor,
    scales: Sequence[float] = DEFAULT_SCALES,
    merge: Merge | None = None,
    *,
    device: torch.device | str | None = None,
    amp: bool = True,
    max_pixels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-scale, flip-augmented dense maps of one image or of a batch of equal-sized images.

    Args:
        forward: Maps an ``n×3×h×w`` ImageNet-normalised batch to ``n×K'×h'×w'`` outputs.
            Called per scale on ``[x_s, hflip(x_s)]``, in chunks of at most ``max_pixels``.
        image: ``uint8`` RGB, ``3×H×W`` or ``N×3×H×W`` (equal sizes batch without padding).
        scales: Resize factors.
        merge: Turns the outputs of the images and of their flips (already flipped back), two
            ``n×K'×h'×w'`` tensors, into the ``n×K×h'×w'`` maps of one scale; default ``a + b``.
            LPCAM merges summed features into prototype similarities here.
        device: Where ``forward`` runs; default the image's device.
        amp: Autocast ``forward`` to float16 on CUDA (maps are accumulated in float32).
        max_pixels: Input pixels per ``forward`` call (flipped copies included); an input
            larger than that goes alone. None: per device (:func:`default_max_pixels`). The
            maps do not depend on it beyond float rounding.

    Returns:
        ``(strided, hr)``: unnormalised sums over scales, ``K×ceil(H/4)×ceil(W/4)`` and
        ``K×H×W`` (with a leading ``N`` dimension for a batched input), ``float32``, on
        ``device``; computed under ``torch.inference_mode`` (clone before in-place edits
        outside it).
    """
    if not scales or any(not np.isfinite(s) or s <= 0 for s in scales):
        raise ConfigError(f"TTA scales must be positive numbers, got {list(scales)}")
    image = as_image_tensor(image)
    images = image.unsqueeze(0) if image.ndim == 3 else image
    merge = merge or _add_pair_sum
    device = torch.device(device) if device is not None else images.device
    n, _, h, w = images.shape
    max_pixels = default_max_pixels(device) if max_pixels is None else int(max_pixels)
    size4, size_up = strided_size((h, w), 4), strided_up_size((h, w), 16)
    strided = hr = None
    with torch.inference_mode():
        for scale in scales:
            size = scaled_size((h, w), scale)
            x = normalize(resize_image(images, size).to(device, non_blocking=True))
            # Inputs per forward call: images with their flips while they fit in max_pixels.
            inputs = max(1, max_pixels // (size[0] * size[1]))
            chunk = max(1, inputs // 2)
            for i in range(0, n, chunk):
                xs = x[i : i + chunk]
                pair = torch.cat([xs, xs.flip(-1)])
                with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                    if len(pair) <= inputs:
                        out = forward(pair)
                    else:
                        out = torch.cat([forward(p) for p in pair.split(inputs)])
                a, b = out.float().split(len(xs))
                maps = merge(a, b.flip(-1)).float()
                if strided is None:
                    strided = maps.new_zeros((n, maps.shape[1], *size4))
                    hr = maps.new_zeros((n, maps.shape[1], *size_up))
                strided[i : i + chunk] += F.interpolate(
                    maps, size4, mode="bilinear", align_corners=False
                )
                hr[i : i + chunk] += F.interpolate(
                    maps, size_up, mode="bilinear", align_corners=False
                )
    hr = hr[..., :h, :w]
    if image.ndim == 3:
        return strided[0], hr[0]
    return strided, hr


def class_maps_by_size(
    images: Sequence[torch.Tensor],
    classes: Sequence[Sequence[int]],
    make_pass: Callable[[list[int]], tuple[Forward, Merge | None]],
    scales: Sequence[float] = DEFAULT_SCALES,
    *,
    device: torch.device | str | None = None,
    amp: bool = True,
    max_pixels: int | None = None,
) -> list[ClassMaps]:
    """TTA class maps of several images, those of equal size sharing their forward passes.

    Per group of equal-sized images, ``make_pass(union)`` gives the ``forward`` and ``merge``
    of :func:`multiscale_flip` producing one channel per class of ``union`` (the sorted union
    of the group's classes); each image then keeps its own classes, max-normalised.

    Args:
        images: ``3×H×W`` ``uint8`` RGB images.
        classes: Per image, the sorted classification-space classes (0..C−1) to keep.
        make_pass: Builds ``(forward, merge)`` for a list of classes.
        scales: TTA scales.
        device: Where the network runs.
        amp: Autocast on CUDA.
        max_pixels: Input pixels per forward call (None: per device).

    Returns:
        One :class:`ClassMaps` per image, keys = class index + 1; an image with no class gets
        ``0×h4×w4`` and ``0×H×W`` maps.
    """
    results: list[ClassMaps | None] = [None] * len(images)
    for group in size_groups([tuple(im.shape[-2:]) for im in images]):
        h, w = images[group[0]].shape[-2:]
        union = sorted(set().union(*(classes[i] for i in group)))
        if union:
            forward, merge = make_pass(union)
            strided, hr = multiscale_flip(
                forward,
                torch.stack([images[i] for i in group]),
                scales,
                merge=merge,
                device=device,
                amp=amp,
                max_pixels=max_pixels,
            )
        for j, i in enumerate(group):
            keep = [union.index(c) for c in classes[i]]
            if keep:
                cam = normalize_maps(strided[j, keep]).cpu().numpy()
                high = normalize_maps(hr[j, keep]).cpu().numpy()
            else:
                cam = np.zeros((0, *strided_size((h, w), 4)), dtype=np.float32)
                high = np.zeros((0, h, w), dtype=np.float32)
            keys = np.asarray(classes[i], dtype=np.int64) + 1
            results[i] = ClassMaps(keys=keys, cam=cam, hr=high)
    return results
