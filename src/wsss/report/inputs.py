"""What a report shows: the values of a run, grouped by the kind of artefact they score.

The report never reads a run directory. Its caller gathers the values into a
:class:`ReportInputs`; every field is optional and a section appears only when its values exist.

**Result kinds.** Each ``results.json`` entry scores one artefact. Its kind decides the table it
goes into; an explicit ``"kind"`` field wins, otherwise the key's prefix decides:

=================  ======================================  ================================
kind               key (without a ``kind`` field)          scores
=================  ======================================  ================================
``seeds``          anything else (``cam``, ``lpcam``,      class maps thresholded into seed
                   ``cam_saliency``)                       masks (threshold sweep, oracle)
``saliency``       ``saliency_*``, or any entry with a     class-agnostic saliency maps
                   ``protocol`` field                      (``miou``, ``precision``,
                                                           ``recall``, ``threshold``, ``best``)
``affinity``       ``affinity_*``                          affinity labels: the usual scores
                                                           and ``ignored`` (share of 255)
``pseudo_masks``   ``rw_*``, ``pseudo_*``                  pseudo masks (random walk, CRF)
``segmentation``   ``segmentation*``                       the segmentation model's
                                                           predictions (val split)
=================  ======================================  ================================

Scores are percentages (0–100) as :func:`wsss.evaluate.evaluate` writes them; ``None`` or NaN
shows as a dash. An entry may carry ``per_class`` (class → ``iou``, ``fp``, ``fn``,
``precision``, ``recall``), ``best`` (the oracle threshold's result), ``sweep`` (rows per
threshold), ``split``, ``num_images`` and ``confusion`` (``N×N`` pixel counts, rows ground
truth, columns prediction; ``N×(N+1)`` with a last column of ignored pixels).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsss.data.base import SegmentationDataset
from wsss.errors import ConfigError, DataError

__all__ = [
    "COLUMN_KINDS",
    "KINDS",
    "ExampleColumn",
    "ExampleSet",
    "ReportInputs",
    "group_results",
    "load_metrics_records",
    "result_kind",
]

# kind → section title, in page order
KINDS: dict[str, str] = {
    "seeds": "Seed masks",
    "saliency": "Saliency",
    "affinity": "Affinity labels",
    "pseudo_masks": "Pseudo masks",
    "segmentation": "Segmentation",
}

_PREFIXES = (
    ("saliency_", "saliency"),
    ("affinity_", "affinity"),
    ("rw_", "pseudo_masks"),
    ("pseudo_", "pseudo_masks"),
    ("segmentation", "segmentation"),
)

# kind of an example column → the file each image has in its folder
COLUMN_KINDS = {
    "heat": ".npz",  # class maps: heat map of the maximum over classes, over the image
    "seed": ".npz",  # class maps: seed mask at the column's background threshold
    "saliency": ".npz",  # one-channel saliency map, over the image
    "mask": ".png",  # palette PNG mask (affinity labels, pseudo masks, predictions)
}


def result_kind(name: str, entry: Mapping[str, Any]) -> str:
    """The kind of the results entry ``name`` (see the module docstring).

    Raises:
        ConfigError: The entry's ``kind`` field is not one of :data:`KINDS`.
    """
    kind = entry.get("kind")
    if kind is not None:
        if kind not in KINDS:
            raise ConfigError(
                f"results entry {name!r} has kind {kind!r}; expected one of {list(KINDS)}"
            )
        return str(kind)
    for prefix, prefixed_kind in _PREFIXES:
        if name.startswith(prefix):
            return prefixed_kind
    return "saliency" if "protocol" in entry else "seeds"


def group_results(
    results: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, Mapping[str, Any]]]:
    """``results`` split by kind, kinds in :data:`KINDS` order, entries in their given order;
    kinds without entries are left out."""
    groups: dict[str, dict[str, Mapping[str, Any]]] = {kind: {} for kind in KINDS}
    for name, entry in results.items():
        groups[result_kind(name, entry)][name] = entry
    return {kind: entries for kind, entries in groups.items() if entries}


@dataclass(frozen=True)
class ExampleColumn:
    """One column of an example grid: a folder with one file per image.

    Args:
        title: Column heading (e.g. ``"CAM"``, ``"pseudo mask"``).
        folder: Folder of ``<id>.npz`` (kinds ``heat``, ``seed``, ``saliency``) or ``<id>.png``
            (kind ``mask``) files.
        kind: ``heat`` (class maps, maximum over classes over the image), ``seed`` (class
            maps, seed mask at ``threshold``), ``saliency`` (one-channel map over the image) or
            ``mask`` (palette PNG; 255 drawn in the ignore colour).
        threshold: Background threshold of a ``seed`` column.
        required: Whether an image needs a file in this column to be drawn. An optional
            column (False) neither restricts nor ranks the images: a caller can pick the
            images first (:func:`wsss.report.examples.choose_examples`), then write this
            column's files for them only (e.g. predictions made for the report).
    """

    title: str
    folder: str | os.PathLike
    kind: str = "mask"
    threshold: float = 0.3
    required: bool = True

    def __post_init__(self) -> None:
        if self.kind not in COLUMN_KINDS:
            raise ConfigError(
                f"example column {self.title!r}: kind {self.kind!r} is not one of "
                f"{list(COLUMN_KINDS)}"
            )

    def path(self, sample_id: str) -> Path:
        """The file of ``sample_id`` in this column's folder."""
        return Path(self.folder) / f"{sample_id}{COLUMN_KINDS[self.kind]}"


@dataclass
class ExampleSet:
    """Example grids of one split: a few fixed images and the worst ones.

    Rows show the image, its ground truth, then each column. The *fixed* images are spread
    evenly over the split; the *worst* are those with the lowest per-image IoU of the ranking
    column (:func:`wsss.report.examples.image_iou`), fixed ones excluded. Only images with a
    file in every required column are drawn.

    Args:
        dataset: The split (images, ground truth, class names, palette).
        columns: Columns after the image and its ground truth.
        title: Heading of the grids (e.g. ``"train split: seeds to pseudo masks"``).
        fixed: Number of evenly spread images.
        worst: Number of worst images (0 for none).
        rank_by: Title of the required ``mask`` or ``seed`` column ranking the worst images;
            default the last required ``mask`` column, else the last required ``seed`` column,
            else none.
        choice: The images already chosen (:func:`wsss.report.examples.choose_examples` of
            this set; optional columns do not change it), so that a caller who chose them to
            fill an optional column does not make the report scan the split again.
    """

    dataset: SegmentationDataset
    columns: Sequence[ExampleColumn]
    title: str = "Examples"
    fixed: int = 4
    worst: int = 4
    rank_by: str | None = None
    choice: Any = None

    def ranking_column(self) -> ExampleColumn | None:
        """The column whose per-image IoU picks the worst images (None: no worst images).

        Raises:
            ConfigError: ``rank_by`` names no column, or a column that is not a mask.
        """
        if self.rank_by is not None:
            for column in self.columns:
                if column.title == self.rank_by:
                    if column.kind not in ("mask", "seed"):
                        raise ConfigError(
                            f"examples {self.title!r}: rank_by column {self.rank_by!r} is a "
                            f"{column.kind} column; choose a mask or seed column"
                        )
                    if not column.required:
                        raise ConfigError(
                            f"examples {self.title!r}: rank_by column {self.rank_by!r} is "
                            "optional; choose a required column (every image has its file)"
                        )
                    return column
            titles = [c.title for c in self.columns]
            raise ConfigError(
                f"examples {self.title!r}: rank_by {self.rank_by!r} is not a column ({titles})"
            )
        for kind in ("mask", "seed"):
            found = [c for c in self.columns if c.kind == kind and c.required]
            if found:
                return found[-1]
        return None


@dataclass
class ReportInputs:
    """Everything a report can show; each field is optional.

    Args:
        results: ``results.json`` content: entry name → scores (see the module docstring).
        title: Page title.
        command: The command line that produced the run (a string or its argv list).
        artefacts: Label → file or folder; linked by its path relative to the report's
            folder (absolute paths are made relative, relative ones are taken as relative to
            the report's folder already).
        timings: Stage name → wall seconds.
        config: The resolved configuration.
        info: Provenance (``run_info.json``: ``seeds``, ``versions``, other sections).
        prototypes: Part make-up of the selected LPCAM prototypes
            (:func:`wsss.maps.lpcam.prototype_composition` rows).
        training: Training run name → its ``metrics.jsonl`` records (:func:`load_metrics_records`):
            records with ``lr`` are training steps (``loss`` and other ``*loss`` keys), the
            others validation scores.
        confusion: Name → confusion counts (``N×N``, or ``N×(N+1)`` with a last column of
            ignored pixels), besides those found in the results entries.
        class_names: Segmentation class names (background first) of the confusion matrices;
            default the first example set's, else ``class 0``, ``class 1``, ...
        examples: Example grids, one set per split.
        notes: Extra HTML shown under the title (trusted, not escaped).
    """

    results: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    title: str = "wsss run"
    command: str | Sequence[str] | None = None
    artefacts: Mapping[str, str | os.PathLike] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)
    prototypes: Sequence[Mapping[str, Any]] = ()
    training: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    confusion: Mapping[str, Any] = field(default_factory=dict)
    class_names: Sequence[str] | None = None
    examples: Sequence[ExampleSet] = ()
    notes: str = ""


def load_metrics_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a trainer's ``metrics.jsonl`` (one JSON object per line).

    Raises:
        DataError: The file is missing, or a line is not a JSON object with a ``step``.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read training metrics ({e})", path=path) from e
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: not valid JSON ({e})", path=path) from e
        if not isinstance(record, dict) or "step" not in record:
            raise DataError(f"{path}:{number}: expected a JSON object with a 'step'", path=path)
        records.append(record)
    return records
