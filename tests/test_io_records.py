"""Settings records of output folders: masks now record what made them, as maps do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wsss.errors import ConfigError
from wsss.io.maps import ClassMaps, MapStore
from wsss.io.masks import MaskStore


def test_a_mask_folder_refuses_other_settings_and_restarts_only_its_own_files(
    tmp_path: Path,
) -> None:
    store = MaskStore(tmp_path)
    store.claim({"checkpoint": "run/last.safetensors", "scales": [0.5, 1.0]})
    store.save("a", np.ones((3, 4), np.uint8))
    (tmp_path / "notes.txt").write_text("kept")
    assert not store.is_complete()

    # The same settings (the checkpoint named another way) resume.
    store.claim({"checkpoint": str(Path("run/../run/last.safetensors")), "scales": [0.5, 1.0]})
    assert store.ids() == ["a"]
    with pytest.raises(ConfigError, match=r"holds masks made with other settings \(scales"):
        store.claim({"checkpoint": "run/last.safetensors", "scales": [1.0]})
    assert store.ids() == ["a"]

    store.claim({"checkpoint": "run/last.safetensors", "scales": [1.0]}, restart=True)
    assert store.ids() == [] and (tmp_path / "notes.txt").read_text() == "kept"
    store.finish(7)
    record = json.loads((tmp_path / "masks.json").read_text())
    assert record == {
        "checkpoint": "run/last.safetensors",
        "scales": [1.0],
        "complete": True,
        "count": 7,
    }
    assert store.is_complete()


def test_files_without_a_record_are_refused_and_kinds_do_not_mix(tmp_path: Path) -> None:
    masks = MaskStore(tmp_path)
    masks.save("a", np.zeros((2, 2), np.uint8))
    with pytest.raises(ConfigError, match=r"holds 1 mask files but no settings record \(masks"):
        masks.claim({"split": "val"})
    # A map folder in the same place sees no map files: the PNG is not its business.
    maps = MapStore(tmp_path)
    maps.claim({"split": "val"})
    maps.save("b", ClassMaps(np.array([1]), np.zeros((1, 1, 1)), np.zeros((1, 2, 2))))
    masks.claim({"split": "val"}, restart=True)
    assert masks.ids() == [] and maps.ids() == ["b"]
    assert (tmp_path / "maps.json").is_file() and (tmp_path / "masks.json").is_file()
