"""PASCAL VOC 2012 (+ SBD) reader; it also reads the synthetic benchmark, which uses VOC layout.

Layout under ``root``::

    JPEGImages/{id}.jpg               images (.jpeg / .png accepted when the .jpg is absent)
    Annotations/{id}.xml              image labels: every <object><name>
    SegmentationClass/{id}.png        masks (palette/gray indices or RGB VOC colours)
    SegmentationClassAug/{id}.png     SBD masks, used for the train_aug split
    SegmentationPart/{id}.png         synthetic benchmark only: part codes (wsss.data.parts)
    ImageSets/Segmentation/{split}.txt
    classes.txt                       optional: foreground class names, one a line

Text files (split lists, ``classes.txt``) are read as UTF-8 with or without a byte-order mark.
Ids must be plain file names (no path separator, not ``.`` or ``..``) and appear once per split.
Images are read upright: their EXIF orientation is applied (``wsss.data.image_io``).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.data.base import IGNORE_INDEX, SegmentationDataset
from wsss.data.image_io import exif_swaps_axes, read_image, read_mask
from wsss.data.parts import PART_NAMES, PARTS_DIRNAME
from wsss.errors import DataError

__all__ = ["VOC_CLASSES", "VOCDataset"]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_PART_CODES = np.array([*PART_NAMES, IGNORE_INDEX], dtype=np.uint8)


def find_image(directory: Path, sample_id: str, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> Path:
    """The image file of ``sample_id`` in ``directory``, trying ``suffixes`` in order."""
    suffixes = tuple(suffixes)
    for suffix in suffixes:
        path = directory / f"{sample_id}{suffix}"
        if path.is_file():
            return path
    tried = "|".join(s.lstrip(".") for s in suffixes)
    raise DataError(
        f"{directory / sample_id}.{{{tried}}}: image of {sample_id!r} not found",
        path=directory / f"{sample_id}{suffixes[0]}",
        kind="missing image",
    )


def image_size(path: Path) -> tuple[int, int] | None:
    """``(H, W)`` of the image as read (EXIF orientation applied), from its header alone.

    None when unreadable (reported when loaded).
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            if exif_swaps_axes(img):
                width, height = height, width
    except (OSError, SyntaxError, ValueError):
        return None
    return height, width


def check_mask_size(mask: np.ndarray, mask_path: Path, image_path: Path | None) -> None:
    """Raise when ``mask`` does not have the size of the image at ``image_path``."""
    size = image_size(image_path) if image_path is not None else None
    if size is not None and mask.shape != size:
        raise DataError(
            f"{mask_path}: mask is {mask.shape[0]}×{mask.shape[1]} (H×W) but its image "
            f"{image_path} is {size[0]}×{size[1]}",
            path=mask_path,
            kind="size mismatch",
        )


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Foreground class names from a text file, one a line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: class list not found (foreground class names, one a line)", path=path
        )
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read class list ({e})", path=path) from e
    return validate_classes([line.strip() for line in lines if line.strip()], str(path), path)


def validate_classes(classes: Sequence[str], source: str, path: Path | None = None) -> list[str]:
    """Check a foreground class list: non-empty, unique, no ``background``, fits in ``uint8``.

    ``source`` names the list in errors; ``path`` is the file it came from, if any.
    """
    classes = [str(c) for c in classes]
    if not classes:
        raise DataError(f"{source}: the class list is empty", path=path, kind="bad class list")
    if not all(c.strip() for c in classes):
        raise DataError(
            f"{source}: empty class name in {classes}", path=path, kind="bad class list"
        )
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise DataError(
            f"{source}: duplicate class names {duplicates}", path=path, kind="bad class list"
        )
    if "background" in classes:
        raise DataError(
            f"{source}: list foreground classes only ('background' is implicit, index 0)",
            path=path,
            kind="bad class list",
        )
    if len(classes) >= IGNORE_INDEX:
        raise DataError(
            f"{source}: {len(classes)} classes do not fit in uint8 masks (at most 254)",
            path=path,
            kind="bad class list",
        )
    return classes


def read_id_list(path: Path, split: str) -> list[str]:
    """Sample ids of a split list file: the first token of each non-blank line.

    Lines like ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` give ``x``. The ids are
    checked with :func:`check_ids`.
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read split list ({e})", path=path) from e
    ids = []
    for line in lines:
        tokens = line.split()
        if tokens:
            ids.append(Path(tokens[0]).stem if "/" in tokens[0] else tokens[0])
    if not ids:
        raise DataError(f"{path}: split {split!r} is empty", path=path, kind="empty split")
    return check_ids(ids, path, split)


def check_ids(ids: list[str], source: Path, split: str) -> list[str]:
    """Return ``ids`` after checking that each is a plain file name listed once.

    Ids become file names (``images/{id}.jpg``, ``{out}/{id}.png``), so an id with a path
    separator, an empty id, ``.`` or ``..`` would read or write outside its folder.

    Args:
        ids: The ids of a split.
        source: The file that lists them (named in errors).
        split: The split name (named in errors).
    """
    for sample_id in ids:
        if sample_id in ("", ".", "..") or any(c in sample_id for c in "/\\\0"):
            raise DataError(
                f"{source}: id {sample_id!r} is not a plain file name (an id names files: "
                "no folder part, not empty, '.' or '..')",
                path=source,
                kind="bad id",
            )
    counts = Counter(ids)
    duplicates = [sample_id for sample_id, n in counts.items() if n > 1]
    if duplicates:
        shown = ", ".join(map(repr, duplicates[:10])) + (", ..." if len(duplicates) > 10 else "")
        raise DataError(
            f"{source}: {len(duplicates)} id(s) listed more than once in split {split!r}: {shown}",
            path=source,
            kind="duplicate id",
        )
    return ids


def names_to_label(
    names: Iterable[str], index: dict[str, int], source: Path, sample_id: str
) -> np.ndarray:
    """``(C,)`` float32 label vector of class ``names``; an unknown name raises."""
    label = np.zeros(len(index), dtype=np.float32)
    for name in names:
        if name not in index:
            preview = ", ".join(list(index)[:5]) + (", ..." if len(index) > 5 else "")
            raise DataError(
                f"{source}: {sample_id!r} has unknown class {name!r} "
                f"(the dataset's {len(index)} classes: {preview})",
                path=source,
                kind="unknown class",
            )
        label[index[name]] = 1.0
    return label


def mask_to_label(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C,)`` float32 label vector of the classes present in a segmentation-space mask."""
    counts = np.bincount(mask.ravel(), minlength=256)
    return (counts[1 : num_classes + 1] > 0).astype(np.float32)


class VOCDataset(SegmentationDataset):
    """PASCAL VOC 2012 (+ SBD ``train_aug``) or any dataset in VOC layout.

    Image labels come from ``Annotations/{id}.xml`` (every ``<object><name>``), or from the
    classes present in the mask when the XML is absent. Masks come from
    ``SegmentationClassAug`` (split ``train_aug``, when the file is there) or
    ``SegmentationClass``; ``load_mask`` gives None when an id has no mask (test split).
    Every bad file raises ``DataError`` naming it when that sample is loaded.

    Args:
        root: The VOC2012 folder.
        split: ``train``, ``train_aug``, ``val``, ``test`` or any NAME with a list file
            ``ImageSets/Segmentation/NAME.txt`` (``train_aug.txt`` may also sit at the root).
        classes: Foreground class names. Default: ``root/classes.txt`` when present, else the
            20 VOC classes.
        masks: ``"auto"`` (as above), a mask folder (relative to ``root`` or absolute), or
            None for no masks.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        classes: Sequence[str] | None = None,
        masks: str | os.PathLike | None = "auto",
    ) -> None:
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset root not found", path=self.root)
        if classes is not None:
            self.classes = validate_classes(classes, "classes")
        elif (self.root / "classes.txt").is_file():
            self.classes = read_class_names(self.root / "classes.txt")
        else:
            self.classes = list(VOC_CLASSES)
        self._class_index = {name: i for i, name in enumerate(self.classes)}
        self.image_dir = self.root / "JPEGImages"
        if not self.image_dir.is_dir():
            raise DataError(
                f"{self.image_dir}: image folder not found",
                path=self.image_dir,
                kind="missing image",
            )
        self.mask_dirs = self._mask_dirs(masks)
        self.ids = read_id_list(self._split_file(), split)
        self._labels: dict[str, np.ndarray] = {}

    def _split_file(self) -> Path:
        candidates = [self.root / "ImageSets" / "Segmentation" / f"{self.split}.txt"]
        if self.split == "train_aug":
            candidates.append(self.root / "train_aug.txt")
        for path in candidates:
            if path.is_file():
                return path
        raise DataError(
            f"split {self.split!r}: no list file (looked for {', '.join(map(str, candidates))})",
            path=candidates[0],
            kind="missing split",
        )

    def _mask_dirs(self, masks: str | os.PathLike | None) -> list[Path]:
        if masks is None:
            return []
        if masks == "auto":
            names = ["SegmentationClassAug"] if self.split == "train_aug" else []
            return [self.root / name for name in [*names, "SegmentationClass"]]
        directory = self.root / masks  # an absolute ``masks`` replaces the root
        if not directory.is_dir():
            raise DataError(f"{directory}: mask folder not found", path=directory)
        return [directory]

    def image_path(self, sample_id: str) -> Path:
        """The image file of ``sample_id`` (DataError when absent)."""
        return find_image(self.image_dir, sample_id)

    def mask_path(self, sample_id: str) -> Path | None:
        """The mask file of ``sample_id``, or None when it has none."""
        for directory in self.mask_dirs:
            path = directory / f"{sample_id}.png"
            if path.is_file():
                return path
        return None

    def load_image(self, sample_id: str) -> np.ndarray:
        return read_image(self.image_path(sample_id))

    def load_mask(self, sample_id: str) -> np.ndarray | None:
        path = self.mask_path(sample_id)
        if path is None:
            return None
        mask = read_mask(path, num_classes=self.num_classes, palette=self.palette)
        check_mask_size(mask, path, self._image_path_or_none(sample_id))
        return mask

    def load_label(self, sample_id: str) -> np.ndarray:
        if sample_id not in self._labels:
            self._labels[sample_id] = self._read_label(sample_id)
        return self._labels[sample_id].copy()

    def _read_label(self, sample_id: str) -> np.ndarray:
        xml = self.root / "Annotations" / f"{sample_id}.xml"
        if xml.is_file():
            try:
                objects = ET.parse(xml).getroot().findall("object")
            except ET.ParseError as e:
                raise DataError(f"{xml}: malformed XML ({e})", path=xml, kind="bad label") from e
            names = [(obj.findtext("name") or "").strip() for obj in objects]
            return names_to_label(names, self._class_index, xml, sample_id)
        mask = self.load_mask(sample_id)
        if mask is None:
            raise DataError(
                f"{xml}: no labels for {sample_id!r} (neither this XML nor a mask exists)",
                path=xml,
                kind="missing label",
            )
        return mask_to_label(mask, self.num_classes)

    @property
    def has_parts(self) -> bool:
        return (self.root / PARTS_DIRNAME).is_dir()

    def load_parts(self, sample_id: str) -> np.ndarray | None:
        if not self.has_parts:
            return None
        path = self.root / PARTS_DIRNAME / f"{sample_id}.png"
        if not path.is_file():
            raise DataError(f"{path}: part annotation not found", path=path, kind="missing parts")
        parts = read_mask(path)
        bad = ~np.isin(parts, _PART_CODES)
        if bad.any():
            codes = sorted(int(v) for v in np.unique(parts[bad]))
            raise DataError(
                f"{path}: unknown part codes {codes} (known: {[int(c) for c in _PART_CODES]})",
                path=path,
                kind="bad parts",
            )
        check_mask_size(parts, path, self._image_path_or_none(sample_id))
        return parts

    def _image_path_or_none(self, sample_id: str) -> Path | None:
        try:
            return self.image_path(sample_id)
        except DataError:
            return None  # a missing image is reported by load_image
