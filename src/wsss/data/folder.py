"""Reader for user data: a folder of images, a labels file and a class list.

Layout under ``root``::

    images/{id}.jpg        images (.jpg .jpeg .png .bmp .tif .tiff .webp)
    classes.txt            foreground class names, one a line
    labels.csv | labels.json
    masks/{id}.png         optional ground-truth masks (palette/gray indices or RGB VOC colours)
    splits/{split}.txt     optional split lists, one id a line

``labels.csv``: one row per image, ``id,names`` where ``names`` separates class names with
``;`` (names may contain spaces, e.g. ``img_001,dog;traffic light``); an empty ``names`` field
means no class. A first row ``id,labels`` is read as a header. ``labels.json``:
``{"img_001": ["dog", "traffic light"], ...}``.

Text files are read as UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8"). Ids must
be plain file names (no path separator, not ``.`` or ``..``) and appear once per split. Images
are read upright: their EXIF orientation is applied.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from wsss.data.base import SegmentationDataset
from wsss.data.image_io import read_image, read_mask
from wsss.data.voc import (
    check_ids,
    check_mask_size,
    find_image,
    names_to_label,
    read_class_names,
)
from wsss.errors import DataError

__all__ = ["FolderDataset"]

FOLDER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_labels_file(path: Path) -> dict[str, list[str]]:
    """``{id: [class names]}`` from a labels CSV or JSON file (format in the module doc)."""
    if not path.is_file():
        raise DataError(f"{path}: labels file not found", path=path, kind="missing label")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read labels file ({e})", path=path) from e
    if path.suffix.lower() == ".json":
        return _parse_json_labels(text, path)
    return _parse_csv_labels(text, path)


def _parse_json_labels(text: str, path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(pairs, path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e})", path=path, kind="bad label") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{id: [class names]}}", path=path)
    for sample_id, names in data.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(
                f"{path}: labels of {sample_id!r} must be a list of class names, got {names!r}",
                path=path,
                kind="bad label",
            )
    return {str(k): [n.strip() for n in v] for k, v in data.items()}


def _unique_keys(pairs: list[tuple[str, object]], path: Path) -> dict[str, object]:
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise DataError(f"{path}: ids listed twice: {duplicates}", path=path, kind="bad label")
    return dict(pairs)


def _parse_csv_labels(text: str, path: Path) -> dict[str, list[str]]:
    labels: dict[str, list[str]] = {}
    for line_no, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise DataError(
                f"{path}:{line_no}: expected 'id,name1;name2', got {len(row)} fields",
                path=path,
                kind="bad label",
            )
        sample_id, names = row[0].strip(), row[1]
        if line_no == 1 and sample_id == "id":
            continue
        if sample_id in labels:
            raise DataError(
                f"{path}:{line_no}: {sample_id!r} is listed twice", path=path, kind="bad label"
            )
        labels[sample_id] = [n.strip() for n in names.split(";") if n.strip()]
    return labels


class FolderDataset(SegmentationDataset):
    """Images in a folder with image-level labels from a CSV or JSON file.

    Args:
        root: The dataset folder (layout and file formats in the module doc).
        split: ``"all"`` (every id of the labels file, in its order) or a NAME with a list
            file ``splits/NAME.txt``.
        labels: Labels file, relative to ``root``; default ``labels.csv``, else ``labels.json``.
        classes: Class list file, relative to ``root``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "all",
        labels: str | os.PathLike | None = None,
        classes: str | os.PathLike = "classes.txt",
    ) -> None:
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset root not found", path=self.root)
        self.classes = read_class_names(self.root / classes)
        self._class_index = {name: i for i, name in enumerate(self.classes)}
        if labels is None:
            csv_path = self.root / "labels.csv"
            labels = "labels.csv" if csv_path.is_file() else "labels.json"
        self.labels_file = self.root / labels  # an absolute ``labels`` replaces the root
        self._names = read_labels_file(self.labels_file)
        self.image_dir = self.root / "images"
        if not self.image_dir.is_dir():
            raise DataError(
                f"{self.image_dir}: image folder not found",
                path=self.image_dir,
                kind="missing image",
            )
        self.mask_dir = self.root / "masks"
        self.ids = self._split_ids()

    def _split_ids(self) -> list[str]:
        if self.split == "all":
            if not self._names:
                raise DataError(
                    f"{self.labels_file}: no images listed (split 'all' is empty)",
                    path=self.labels_file,
                    kind="empty split",
                )
            return check_ids(list(self._names), self.labels_file, self.split)
        path = self.root / "splits" / f"{self.split}.txt"
        if not path.is_file():
            raise DataError(
                f"{path}: list file of split {self.split!r} not found",
                path=path,
                kind="missing split",
            )
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read split list ({e})", path=path) from e
        ids = [line.strip() for line in lines if line.strip()]  # ids may contain spaces
        if not ids:
            raise DataError(f"{path}: split {self.split!r} is empty", path=path, kind="empty split")
        return check_ids(ids, path, self.split)

    def image_path(self, sample_id: str) -> Path:
        """The image file of ``sample_id`` (DataError when absent)."""
        return find_image(self.image_dir, sample_id, FOLDER_IMAGE_SUFFIXES)

    def load_image(self, sample_id: str) -> np.ndarray:
        return read_image(self.image_path(sample_id))

    def load_label(self, sample_id: str) -> np.ndarray:
        if sample_id not in self._names:
            raise DataError(
                f"{self.labels_file}: no entry for {sample_id!r}",
                path=self.labels_file,
                kind="missing label",
            )
        return names_to_label(
            self._names[sample_id], self._class_index, self.labels_file, sample_id
        )

    def load_mask(self, sample_id: str) -> np.ndarray | None:
        path = self.mask_dir / f"{sample_id}.png"
        if not path.is_file():
            return None
        mask = read_mask(path, num_classes=self.num_classes, palette=self.palette)
        try:
            image = self.image_path(sample_id)
        except DataError:
            image = None  # reported by load_image
        check_mask_size(mask, path, image)
        return mask
