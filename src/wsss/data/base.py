"""The common dataset interface shared by every reader.

Conventions (ARCHITECTURE.md): images are RGB ``uint8`` arrays of shape ``H×W×3``; image
labels are ``float32`` vectors over the C foreground classes (classification space, no
background); masks are ``uint8`` ``H×W`` in segmentation space (0 = background,
1..C = class index + 1, 255 = ignore).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss.errors import DataError
from wsss.io.masks import voc_palette

IGNORE_INDEX = 255

__all__ = ["IGNORE_INDEX", "DataError", "Sample", "SegmentationDataset", "voc_palette"]


@dataclass
class Sample:
    """One image of a dataset.

    Attributes:
        id: Sample id (file stem).
        image: RGB image, ``H×W×3`` ``uint8``.
        label: Image-level labels, ``(C,)`` ``float32`` in {0, 1}.
        mask: Ground-truth mask in segmentation space, ``H×W`` ``uint8``, or None.
    """

    id: str
    image: np.ndarray
    label: np.ndarray
    mask: np.ndarray | None = None


class SegmentationDataset:
    """Base class of every reader: an indexed list of samples of one split.

    Subclasses set ``root``, ``split``, ``classes`` and ``ids`` and implement
    ``load_image``, ``load_label`` and ``load_mask``.
    """

    root: Path
    split: str
    classes: list[str]
    ids: list[str]
    palette: np.ndarray = voc_palette()

    @property
    def num_classes(self) -> int:
        """Number of foreground classes C."""
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """Segmentation-space names: ``["background", *classes]``."""
        return ["background", *self.classes]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        sample_id = self.ids[index]
        return Sample(
            id=sample_id,
            image=self.load_image(sample_id),
            label=self.load_label(sample_id),
            mask=self.load_mask(sample_id),
        )

    def load_image(self, sample_id: str) -> np.ndarray:
        """RGB ``H×W×3`` ``uint8`` image of ``sample_id``."""
        raise NotImplementedError

    def load_label(self, sample_id: str) -> np.ndarray:
        """``(C,)`` ``float32`` image-level label vector of ``sample_id``."""
        raise NotImplementedError

    def load_mask(self, sample_id: str) -> np.ndarray | None:
        """Ground-truth ``H×W`` ``uint8`` mask of ``sample_id``, or None when absent."""
        return None

    def load_parts(self, sample_id: str) -> np.ndarray | None:
        """Diagnostic part annotation (see ``wsss.data.parts``), or None when absent."""
        return None

    @property
    def has_parts(self) -> bool:
        """Whether the dataset carries the synthetic benchmark's part annotation."""
        return False
