"""The dataset-format registry and ``build_dataset``."""

from __future__ import annotations

import inspect
import os
from typing import Any

from wsss.data.base import SegmentationDataset
from wsss.data.coco import COCODataset
from wsss.data.folder import FolderDataset
from wsss.data.voc import VOCDataset
from wsss.errors import ConfigError
from wsss.registry import Registry

__all__ = ["DATASETS", "build_dataset"]

DATASETS: Registry[type[SegmentationDataset]] = Registry("dataset format")
DATASETS.register("voc")(VOCDataset)
DATASETS.register("coco")(COCODataset)
DATASETS.register("folder")(FolderDataset)


def build_dataset(
    format: str, root: str | os.PathLike, split: str, **kwargs: Any
) -> SegmentationDataset:
    """Open split ``split`` of the dataset at ``root`` with the reader registered as ``format``.

    Args:
        format: A registered format (``voc``, ``coco``, ``folder``).
        root: Dataset root folder.
        split: Split name, as the reader understands it.
        **kwargs: Reader options (e.g. ``classes`` for ``voc``, ``crowd`` for ``coco``).
    """
    try:
        factory = DATASETS.get(format)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    try:
        inspect.signature(factory).bind(root, split=split, **kwargs)
    except TypeError as e:
        raise ConfigError(f"dataset format {format!r}: {e}") from None
    return factory(root, split=split, **kwargs)
