"""Artefacts on disk: atomic writes, map and mask stores, checkpoints.

Every stage reads and writes through these, so a file's format and path are defined once.
"""

from wsss.io.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_stale_temporaries,
)
from wsss.io.checkpoints import (
    load_state_file,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    save_state_file,
)
from wsss.io.maps import ClassMaps, MapStore, load_class_maps, save_class_maps
from wsss.io.masks import MaskStore, save_mask_png, voc_palette

__all__ = [
    "ClassMaps",
    "MapStore",
    "MaskStore",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "clean_stale_temporaries",
    "load_class_maps",
    "load_state_file",
    "read_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_class_maps",
    "save_mask_png",
    "save_state_file",
    "voc_palette",
]
