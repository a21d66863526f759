"""check_dataset / check_data and ``wsss check-data`` on clean and damaged datasets."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from wsss.cli import app, main
from wsss.data import FolderDataset, VOCDataset, check_data, check_dataset
from wsss.data.image_io import write_image, write_mask
from wsss.errors import DataError

runner = CliRunner()
SIZES = {"ok1": (6, 8), "ok2": (10, 5), "trunc": (40, 40), "gone": (6, 8)}
SIZES |= {"small": (6, 8), "badid": (6, 8), "unicorn": (6, 8), "nolabel": (7, 9)}


def make_voc(root):
    """A clean VOC layout: every id has an image, an XML and a mask matching the XML."""
    rng = np.random.default_rng(0)
    for sample_id, (h, w) in SIZES.items():
        write_image(root / "JPEGImages" / f"{sample_id}.jpg", rng.integers(0, 256, (h, w, 3)))
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[1:3, 1:3] = 15  # person
        mask[3:5, 2:4] = 8  # cat
        write_mask(root / "SegmentationClass" / f"{sample_id}.png", mask)
        objects = "<object><name>person</name></object><object><name>cat</name></object>"
        xml = root / "Annotations" / f"{sample_id}.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text(f"<annotation>{objects}</annotation>")
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(SIZES) + "\n")
    (lists / "val.txt").write_text("ok1\n")
    return root


def damage(root):
    """Plant one problem per sample; ok1 and ok2 stay clean."""
    jpeg = root / "JPEGImages" / "trunc.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:-200])
    (root / "JPEGImages" / "gone.jpg").unlink()
    write_mask(root / "SegmentationClass" / "small.png", np.zeros((5, 8), np.uint8))
    write_mask(root / "SegmentationClass" / "badid.png", np.full((6, 8), 42, np.uint8))
    xml = root / "Annotations" / "unicorn.xml"
    xml.write_text("<annotation><object><name>unicorn</name></object></annotation>")
    (root / "Annotations" / "nolabel.xml").write_text("<annotation></annotation>")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("")


EXPECTED_PROBLEMS = {
    ("trunc", "unreadable image"),
    ("gone", "missing image"),
    ("small", "size mismatch"),
    ("badid", "class id out of range"),
    ("unicorn", "unknown class"),
}


@pytest.fixture
def voc(tmp_path):
    return make_voc(tmp_path / "voc")


def test_clean_dataset_summary(voc):
    report = check_dataset(VOCDataset(voc, "train"), progress=False)
    assert report.ok and not report.problems and not report.warnings
    assert report.samples == report.images_ok == report.masks == len(SIZES)
    assert report.class_counts["person"] == report.class_counts["cat"] == len(SIZES)
    assert report.class_counts["dog"] == 0
    assert report.height_range == (6, 40) and report.width_range == (5, 40)


def test_damaged_dataset_every_problem_found(voc):
    damage(voc)
    report = check_data(voc, "voc", "train", progress=False)
    found = {(p.id, p.kind) for p in report.problems}
    assert found == EXPECTED_PROBLEMS
    assert report.images_ok == 3  # ok1, ok2, nolabel (a warning only)
    assert {(w.id, w.kind) for w in report.warnings} == {
        ("nolabel", "no labels"),
        ("nolabel", "label/mask mismatch"),
    }
    problem = next(p for p in report.problems if p.id == "small")
    assert problem.file.endswith("small.png") and "5×8" in problem.message
    assert report.problems_by_kind() == {kind: 1 for _, kind in EXPECTED_PROBLEMS}
    assert report.class_counts["person"] == 6  # all labels read except unicorn's and nolabel's
    assert report.height_range == (6, 10)  # readable images only


def test_empty_split_is_a_problem(voc):
    damage(voc)
    report = check_data(voc, "voc", "val", progress=False)
    assert [(p.id, p.kind) for p in report.problems] == [(None, "empty split")]
    assert report.problems[0].file.endswith("val.txt")


def test_threads_give_the_same_report(voc):
    damage(voc)
    one = check_data(voc, "voc", "train", workers=1, progress=False)
    two = check_data(voc, "voc", "train", workers=3, progress=False)
    assert one.to_dict() == two.to_dict()


def test_duplicates_and_missing_masks(voc):
    (voc / "ImageSets" / "Segmentation" / "dup.txt").write_text("ok1\nok2\nok1\n")
    report = check_data(voc, "voc", "dup", progress=False)  # the reader refuses the split
    assert [(p.file, p.kind) for p in report.problems] == [
        (str(voc / "ImageSets" / "Segmentation" / "dup.txt"), "duplicate id")
    ]
    assert "'ok1'" in report.problems[0].message
    (voc / "ImageSets" / "Segmentation" / "two.txt").write_text("ok1\nok2\n")
    (voc / "SegmentationClass" / "ok2.png").unlink()
    report = check_dataset(VOCDataset(voc, "two"), progress=False)
    assert report.ok
    assert [(w.id, w.kind) for w in report.warnings] == [("ok2", "missing mask")]


def test_folder_unknown_class_and_missing_entry(tmp_path):
    root = tmp_path / "f"
    write_image(root / "images" / "a.png", np.zeros((3, 3, 3), np.uint8))
    write_image(root / "images" / "b.png", np.zeros((3, 3, 3), np.uint8))
    (root / "classes.txt").write_text("cat\n")
    (root / "labels.csv").write_text("a,cat\nb,dog\nc,cat\n")
    report = check_dataset(FolderDataset(root), progress=False)
    assert {(p.id, p.kind) for p in report.problems} == {
        ("b", "unknown class"),
        ("c", "missing image"),
    }
    assert report.class_counts == {"cat": 2}


def test_coco_images_without_labels_are_warnings(tmp_path):
    root = tmp_path / "coco"
    images = [{"id": i, "file_name": f"im{i}.jpg", "height": 4, "width": 4} for i in (1, 2)]
    segmentation = [[0, 0, 2, 0, 2, 2, 0, 2]]
    annotation = {"id": 1, "image_id": 1, "category_id": 7, "iscrowd": 0, "bbox": [0, 0, 2, 2]}
    data = {
        "images": images,
        "annotations": [annotation | {"segmentation": segmentation}],
        "categories": [{"id": 7, "name": "kite"}],
    }
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    for img in images:
        write_image(root / "val2014" / img["file_name"], np.zeros((4, 4, 3), np.uint8))
    report = check_data(root, "coco", "val2014", progress=False)
    assert report.ok and report.masks == 2 and report.class_counts == {"kite": 1}
    assert [(w.id, w.kind) for w in report.warnings] == [("im2", "no labels")]


def test_cli_clean_exit_zero(voc):
    result = runner.invoke(app, ["check-data", "--data", str(voc), "--split", "train"])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "samples" in result.output


def test_cli_damaged_exit_one_lists_every_problem(voc, tmp_path):
    damage(voc)
    out = tmp_path / "report.json"
    args = ["check-data", "--data", str(voc), "--format", "voc", "--split", "train"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 1
    for sample_id, kind in EXPECTED_PROBLEMS:
        assert sample_id in result.output and kind in result.output
    saved = json.loads(out.read_text())
    assert {(p["id"], p["kind"]) for p in saved["problems"]} == EXPECTED_PROBLEMS
    result = runner.invoke(app, [*args, "--max-rows", "2"])
    assert result.exit_code == 1 and "and 3 more" in result.output


def test_cli_empty_split_and_strict(voc):
    damage(voc)
    result = runner.invoke(app, ["check-data", "--data", str(voc), "--split", "val"])
    assert result.exit_code == 1 and "empty split" in result.output
    (voc / "ImageSets" / "Segmentation" / "nl.txt").write_text("nolabel\n")
    args = ["check-data", "--data", str(voc), "--split", "nl"]
    assert runner.invoke(app, args).exit_code == 0  # warnings only
    assert runner.invoke(app, [*args, "--strict"]).exit_code == 1


def test_missing_root_is_a_clear_error(tmp_path, monkeypatch, capsys):
    with pytest.raises(DataError, match="dataset root not found"):
        check_data(tmp_path / "nowhere", "voc", "train")
    argv = ["wsss", "check-data", "--data", str(tmp_path / "nowhere"), "--split", "train"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "dataset root not found" in err and "Traceback" not in err
