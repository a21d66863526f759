"""MS COCO 2014 reader: instance annotations rasterised to semantic masks on first use."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from wsss.data.base import IGNORE_INDEX, SegmentationDataset
from wsss.data.image_io import read_image, read_mask, write_mask
from wsss.data.voc import check_ids, image_size
from wsss.errors import ConfigError, DataError

__all__ = ["COCODataset"]

CROWD_MODES = ("ignore", "background")


class COCODataset(SegmentationDataset):
    """MS COCO 2014 (or any split with a COCO instances file).

    Classes are the json's categories in increasing category-id order, mapped to segmentation
    ids 1..C (1..80 for COCO). Masks paint the instances in annotation order (a later instance
    overwrites an earlier one). Crowd regions become 255 when ``crowd="ignore"``, painted in
    order like the instances; with ``crowd="background"`` they are not painted, so they stay
    background unless an instance covers them. Masks are cached as palette PNGs on first use.

    Image labels come from the non-crowd annotations only: a class that appears in an image
    only as a crowd region is not labelled, since it has no labelled pixel in the mask either.
    Images without any labelled class are kept and listed in ``empty_ids``. Ids are the file
    stems, so two images may not share a stem, and a ``file_name`` may not leave ``{split}/``.

    Args:
        root: Folder holding ``{split}/*.jpg`` and ``annotations/instances_{split}.json``.
        split: ``train2014``, ``val2014`` or another name following that layout.
        crowd: ``"ignore"`` or ``"background"``, the mask value of crowd regions.
        cache_dir: Mask cache folder. Default ``root/masks_cache/{split}`` (``crowd="ignore"``)
            or ``root/masks_cache/{split}_crowd_background``. Delete it after editing the
            annotation file.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train2014",
        crowd: str = "ignore",
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        if crowd not in CROWD_MODES:
            raise ConfigError(f"crowd={crowd!r}: expected one of {CROWD_MODES}")
        self.crowd = crowd
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset root not found", path=self.root)
        self.annotation_file = self.root / "annotations" / f"instances_{split}.json"
        if not self.annotation_file.is_file():
            raise DataError(
                f"{self.annotation_file}: annotation file of split {split!r} not found",
                path=self.annotation_file,
                kind="missing split",
            )
        self.image_dir = self.root / split
        if not self.image_dir.is_dir():
            raise DataError(
                f"{self.image_dir}: image folder not found",
                path=self.image_dir,
                kind="missing image",
            )
        suffix = "" if crowd == "ignore" else "_crowd_background"
        default_cache = self.root / "masks_cache" / f"{split}{suffix}"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache

        self.coco = self._load_annotations()
        category_ids = sorted(self.coco.cats)
        self.classes = [str(self.coco.cats[c]["name"]) for c in category_ids]
        self._category_index = {c: i for i, c in enumerate(category_ids)}
        images = sorted(self.coco.imgs.values(), key=lambda img: img["id"])
        names = [Path(str(img["file_name"])) for img in images]
        escaping = [str(name) for name in names if name.is_absolute() or ".." in name.parts]
        if escaping:
            raise DataError(
                f"{self.annotation_file}: file_name {escaping[0]!r} leaves the image folder",
                path=self.annotation_file,
                kind="bad id",
            )
        stems = check_ids([name.stem for name in names], self.annotation_file, split)
        self._images = dict(zip(stems, images, strict=True))
        self.ids = list(self._images)
        if not self.ids:
            raise DataError(
                f"{self.annotation_file}: split {split!r} has no images",
                path=self.annotation_file,
                kind="empty split",
            )
        self.empty_ids: set[str] = {
            sample_id
            for sample_id, img in self._images.items()
            if all(ann.get("iscrowd", 0) for ann in self.coco.imgToAnns[img["id"]])
        }
        self._cache_warned = False

    def _load_annotations(self) -> COCO:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
                return COCO(str(self.annotation_file))
        except (ValueError, KeyError, TypeError, AssertionError) as e:
            raise DataError(
                f"{self.annotation_file}: not a COCO instances file ({type(e).__name__}: {e})",
                path=self.annotation_file,
                kind="bad label",
            ) from e

    def image_path(self, sample_id: str) -> Path:
        """The image file of ``sample_id``."""
        return self.image_dir / self._image_info(sample_id)["file_name"]

    def _image_info(self, sample_id: str) -> dict:
        try:
            return self._images[sample_id]
        except KeyError:
            raise KeyError(f"{sample_id!r} is not in COCO split {self.split!r}") from None

    def load_image(self, sample_id: str) -> np.ndarray:
        path = self.image_path(sample_id)
        if not path.is_file():
            raise DataError(f"{path}: image not found", path=path, kind="missing image")
        return read_image(path)

    def load_label(self, sample_id: str) -> np.ndarray:
        label = np.zeros(self.num_classes, dtype=np.float32)
        for ann in self._annotations(sample_id):
            if not ann.get("iscrowd", 0):
                label[self._class_of(ann, sample_id)] = 1.0
        return label

    def load_mask(self, sample_id: str) -> np.ndarray:
        path = self.cache_dir / f"{sample_id}.png"
        mask = None
        if path.is_file():
            with contextlib.suppress(DataError):  # a damaged cache entry is rebuilt below
                mask = read_mask(path, num_classes=self.num_classes)
        if mask is None:
            mask = self.rasterize(sample_id)
            self._write_cache(path, mask)
        image = self.image_path(sample_id)
        size = image_size(image) if image.is_file() else None
        if size is not None and mask.shape != size:
            raise DataError(
                f"{self.annotation_file}: {sample_id!r} is annotated as {mask.shape[0]}×"
                f"{mask.shape[1]} (H×W) but its image {image} is {size[0]}×{size[1]}",
                path=self.annotation_file,
                kind="size mismatch",
            )
        return mask

    def rasterize(self, sample_id: str) -> np.ndarray:
        """The mask of ``sample_id`` built from its annotations (no cache)."""
        info = self._image_info(sample_id)
        mask = np.zeros((int(info["height"]), int(info["width"])), dtype=np.uint8)
        for ann in self._annotations(sample_id):
            if ann.get("iscrowd", 0):
                if self.crowd == "background":
                    continue
                value = IGNORE_INDEX
            else:
                value = self._class_of(ann, sample_id) + 1
            if not ann.get("segmentation"):
                continue  # a box-only annotation has nothing to paint
            try:
                region = self.coco.annToMask(ann).astype(bool)
            except Exception as e:  # pycocotools raises bare exceptions on malformed shapes
                raise DataError(
                    f"{self.annotation_file}: annotation {ann.get('id')} of {sample_id!r} cannot "
                    f"be rasterised ({type(e).__name__}: {e})",
                    path=self.annotation_file,
                    kind="bad label",
                ) from e
            mask[region] = value
        return mask

    def _annotations(self, sample_id: str) -> list[dict]:
        return self.coco.imgToAnns[self._image_info(sample_id)["id"]]

    def _class_of(self, ann: dict, sample_id: str) -> int:
        try:
            return self._category_index[ann["category_id"]]
        except KeyError:
            raise DataError(
                f"{self.annotation_file}: annotation {ann.get('id')} of {sample_id!r} has "
                f"unknown category id {ann.get('category_id')!r}",
                path=self.annotation_file,
                kind="unknown class",
            ) from None

    def _write_cache(self, path: Path, mask: np.ndarray) -> None:
        try:
            write_mask(path, mask, self.palette)
        except OSError as e:
            if not self._cache_warned:
                warnings.warn(
                    f"{self.cache_dir}: cannot cache COCO masks ({e}); they are rebuilt on use",
                    stacklevel=3,
                )
                self._cache_warned = True
