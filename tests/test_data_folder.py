"""Folder reader: CSV and JSON labels, class list, optional masks and splits, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wsss.data import FolderDataset, build_dataset
from wsss.data.image_io import write_image, write_mask
from wsss.errors import DataError

CLASSES = ["cat", "dog", "traffic light"]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "mydata"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("p1.jpg", "p2.png", "p3.jpeg"):
        write_image(root / "images" / name, rng.integers(0, 256, (4, 5, 3), np.uint8))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "labels.csv").write_text('id,labels\np1,cat;traffic light\np2, dog ; cat \n"p3",\n')
    return root


def test_csv_labels(folder):
    ds = FolderDataset(folder)
    assert ds.ids == ["p1", "p2", "p3"] and ds.classes == CLASSES
    np.testing.assert_array_equal(ds.load_label("p1"), [1, 0, 1])
    np.testing.assert_array_equal(ds.load_label("p2"), [1, 1, 0])
    np.testing.assert_array_equal(ds.load_label("p3"), [0, 0, 0])
    assert ds[1].image.shape == (4, 5, 3)
    assert ds.load_mask("p1") is None


def test_json_labels_and_explicit_file(folder):
    (folder / "labels.csv").unlink()
    (folder / "labels.json").write_text(json.dumps({"p2": ["traffic light"], "p1": []}))
    ds = build_dataset("folder", folder, "all")
    assert ds.ids == ["p2", "p1"]
    np.testing.assert_array_equal(ds.load_label("p2"), [0, 0, 1])
    (folder / "other.json").write_text(json.dumps({"p3": ["dog"]}))
    ds = FolderDataset(folder, labels="other.json")
    np.testing.assert_array_equal(ds.load_label("p3"), [0, 1, 0])


def test_masks_and_splits(folder):
    mask = np.array([[0, 1, 3, 255, 0]] * 4, dtype=np.uint8)
    write_mask(folder / "masks" / "p2.png", mask)
    (folder / "splits").mkdir()
    (folder / "splits" / "val.txt").write_text("p2\n\np3\n")
    ds = FolderDataset(folder, "val")
    assert ds.ids == ["p2", "p3"]
    np.testing.assert_array_equal(ds.load_mask("p2"), mask)
    assert ds.load_mask("p3") is None
    write_mask(folder / "masks" / "p3.png", np.zeros((3, 5), np.uint8))
    with pytest.raises(DataError, match=r"p3\.png: mask is 3×5 .*p3\.jpeg is 4×5"):
        ds.load_mask("p3")
    write_mask(folder / "masks" / "p3.png", np.full((4, 5), 4, np.uint8))
    with pytest.raises(DataError, match=r"class ids \[4\] outside 0\.\.3"):
        ds.load_mask("p3")


def test_unknown_class_names_file_id_and_class(folder):
    (folder / "labels.csv").write_text("p1,cat;unicorn\n")
    with pytest.raises(DataError, match=r"labels\.csv: 'p1' has unknown class 'unicorn'") as info:
        FolderDataset(folder).load_label("p1")
    assert info.value.kind == "unknown class"


def test_label_file_errors(folder):
    (folder / "labels.csv").write_text("p1,cat,dog\n")
    with pytest.raises(DataError, match=r"labels\.csv:1: expected 'id,name1;name2', got 3"):
        FolderDataset(folder)
    (folder / "labels.csv").write_text("p1,cat\np1,dog\n")
    with pytest.raises(DataError, match=r"labels\.csv:2: 'p1' is listed twice"):
        FolderDataset(folder)
    (folder / "labels.csv").write_text("id,labels\n")
    with pytest.raises(DataError, match="split 'all' is empty"):
        FolderDataset(folder)
    (folder / "labels.csv").unlink()
    with pytest.raises(DataError, match=r"labels\.json: labels file not found"):
        FolderDataset(folder)
    (folder / "labels.json").write_text(json.dumps({"p1": "cat"}))
    with pytest.raises(DataError, match="labels of 'p1' must be a list"):
        FolderDataset(folder)


def test_missing_entries(folder):
    (folder / "splits").mkdir()
    (folder / "splits" / "s.txt").write_text("p1\nghost\n")
    ds = FolderDataset(folder, "s")
    with pytest.raises(DataError, match=r"labels\.csv: no entry for 'ghost'") as info:
        ds.load_label("ghost")
    assert info.value.kind == "missing label"
    with pytest.raises(DataError, match="image of 'ghost' not found"):
        ds.load_image("ghost")
    with pytest.raises(DataError, match=r"splits/nope\.txt: list file of split 'nope' not found"):
        FolderDataset(folder, "nope")
    (folder / "splits" / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="split 'empty' is empty"):
        FolderDataset(folder, "empty")
    (folder / "classes.txt").write_text("")
    with pytest.raises(DataError, match=r"classes\.txt: the class list is empty"):
        FolderDataset(folder)
