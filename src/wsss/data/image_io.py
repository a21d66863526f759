"""Reading images and masks robustly, and writing palette masks atomically.

Images are read upright: an EXIF orientation tag (phone photos) is applied, as every image
viewer does, so that an image lines up with a mask drawn over it in an annotation tool.
:func:`wsss.data.voc.image_size` reports the size after orientation too. Masks are index
maps and are read as stored.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wsss.data.base import IGNORE_INDEX, voc_palette
from wsss.errors import DataError
from wsss.io.atomic import atomic_path
from wsss.io.masks import save_mask_png


def _open(path: Path, what: str = "image") -> Image.Image:
    if not path.is_file():
        raise DataError(f"{path}: file not found", path=path, kind=f"missing {what}")
    try:
        with Image.open(path) as img:
            img.load()  # force decoding now so truncated files fail here, not later
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as e:
        raise DataError(
            f"{path}: unreadable or truncated {what} ({e})", path=path, kind=f"unreadable {what}"
        ) from e
    return img


_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # the EXIF orientations that rotate by 90° or 270°


def _exif_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except (OSError, SyntaxError, ValueError, TypeError):  # a damaged EXIF block
        return 1


def exif_swaps_axes(img: Image.Image) -> bool:
    """Whether ``img``'s EXIF orientation swaps its width and height when applied."""
    return _exif_orientation(img) in _SWAPPING_ORIENTATIONS


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read any image as RGB ``H×W×3`` ``uint8``, upright (EXIF orientation applied).

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted; 16-bit
    values are scaled to 8 bits rather than clipped.
    """
    path = Path(path)
    img = _open(path)
    if _exif_orientation(img) in range(2, 9):
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        arr = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def read_mask(
    path: str | os.PathLike,
    num_classes: int | None = None,
    palette: np.ndarray | None = None,
) -> np.ndarray:
    """Read a segmentation mask as ``H×W`` ``uint8`` class indices (255 = ignore).

    Palette (``P``) and grayscale (``L``) PNGs are taken as indices. RGB images are decoded
    through ``palette`` (VOC colours by default); the boundary colour (index 255) maps to 255
    and any other unknown colour is an error naming the file.

    Args:
        path: Mask file.
        num_classes: Number of foreground classes C; if given, indices above C other than 255
            are an error.
        palette: ``256×3`` colour table for RGB masks.
    """
    path = Path(path)
    img = _open(path, "mask")
    if img.mode in ("P", "L"):
        mask = np.asarray(img, dtype=np.uint8).copy()
    elif img.mode in ("I", "I;16", "I;16B", "I;16L"):
        arr = np.asarray(img)
        if arr.max(initial=0) > 255:
            raise DataError(
                f"{path}: mask values above 255 (max {int(arr.max())})",
                path=path,
                kind="class id out of range",
            )
        mask = arr.astype(np.uint8)
    elif img.mode in ("RGB", "RGBA"):
        mask = decode_rgb_mask(np.asarray(img.convert("RGB")), palette, num_classes, path)
    else:
        raise DataError(
            f"{path}: unsupported mask mode {img.mode!r} (use palette or gray PNG)",
            path=path,
            kind="unreadable mask",
        )
    if num_classes is not None:
        bad = (mask > num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            ids = sorted(int(v) for v in np.unique(mask[bad]))
            raise DataError(
                f"{path}: mask has class ids {ids} outside 0..{num_classes} (and 255 = ignore)",
                path=path,
                kind="class id out of range",
            )
    return mask


def decode_rgb_mask(
    rgb: np.ndarray,
    palette: np.ndarray | None = None,
    num_classes: int | None = None,
    path: str | os.PathLike = "<array>",
) -> np.ndarray:
    """Map an ``H×W×3`` colour mask to indices through ``palette``; unknown colours raise."""
    palette = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    n = palette.shape[0] if num_classes is None else min(num_classes + 1, palette.shape[0])
    codes = rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64) << 8 | rgb[..., 2]
    table: dict[int, int] = {}
    for i in range(palette.shape[0]):
        r, g, b = (int(v) for v in palette[i])
        table.setdefault(r << 16 | g << 8 | b, i)
    boundary = palette[IGNORE_INDEX] if palette.shape[0] > IGNORE_INDEX else (224, 224, 192)
    table[int(boundary[0]) << 16 | int(boundary[1]) << 8 | int(boundary[2])] = IGNORE_INDEX
    uniq, inverse = np.unique(codes, return_inverse=True)
    lut = np.array([table.get(int(code), -1) for code in uniq], dtype=np.int64)
    if (lut < 0).any():
        unknown = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in uniq[lut < 0].tolist()]
        shown = ", ".join(map(str, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
        raise DataError(
            f"{path}: {len(unknown)} colour(s) not in the palette: {shown}",
            path=path,
            kind="unknown colour",
        )
    outside = (lut >= n) & (lut != IGNORE_INDEX)
    if outside.any():
        raise DataError(
            f"{path}: colours of class ids {sorted(lut[outside].tolist())} outside 0..{n - 1} "
            "(and 255 = ignore)",
            path=path,
            kind="class id out of range",
        )
    return lut.astype(np.uint8)[inverse].reshape(codes.shape)


def write_mask(
    path: str | os.PathLike, mask: np.ndarray, palette: np.ndarray | None = None
) -> None:
    """Write an ``H×W`` index mask as a palette PNG (VOC colours by default), atomically."""
    save_mask_png(path, mask, palette)


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> None:
    """Write an RGB ``H×W×3`` ``uint8`` image (format from the suffix), atomically."""
    path = Path(path)
    img = Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB")
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    options = {"quality": quality} if fmt == "JPEG" else {}
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **options)
