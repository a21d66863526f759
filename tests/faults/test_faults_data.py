"""Planted faults in user data and in ``check-data`` output, run through the real readers and CLI.

Each test plants one fault a user could make (or meet) and checks that the command either does
the right thing or stops with one clear line naming the file; none may give a silent wrong
result or a traceback.
"""

from __future__ import annotations

import errno
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from wsss.cli import app, main
from wsss.data import FolderDataset, build_dataset, check_data
from wsss.data.image_io import write_image, write_mask
from wsss.errors import DataError

runner = CliRunner()
BOM = "\ufeff"


def make_folder(root: Path, ids: tuple[str, ...] = ("a", "b")) -> Path:
    """A clean folder-format dataset: 4×6 images, classes cat/dog, labels.csv."""
    for sample_id in ids:
        write_image(root / "images" / f"{sample_id}.png", np.full((4, 6, 3), 50, np.uint8))
    (root / "classes.txt").write_text("cat\ndog\n")
    (root / "labels.csv").write_text("".join(f"{i},cat\n" for i in ids))
    return root


def run_main(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run the console entry point as a user would; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["wsss", *argv])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


# 1. A relative dataset root (the labels file was looked up under root/root).


def test_relative_root_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_folder(Path("mydata"))
    args = ["check-data", "--data", "mydata", "--format", "folder", "--split", "all"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert build_dataset("folder", "mydata", "all").ids == ["a", "b"]


# 2. Ids that are paths: they read outside images/ and make `wsss cams` write outside --out.


@pytest.mark.parametrize("bad_id", ["../escape/evil", "/tmp/evil", "sub/evil", "a\\b", ".", ".."])
def test_path_like_id_in_labels_is_refused(tmp_path, bad_id):
    root = make_folder(tmp_path / "d")
    write_image(tmp_path / "escape" / "evil.png", np.zeros((4, 6, 3), np.uint8))
    (root / "labels.csv").write_text(f"a,cat\n{bad_id},dog\n")
    report = check_data(root, "folder", "all", progress=False)
    assert [(p.kind, p.file) for p in report.problems] == [("bad id", str(root / "labels.csv"))]
    assert repr(bad_id) in report.problems[0].message


def test_empty_and_path_ids_in_split_files_are_refused(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("a\n../b\n")
    with pytest.raises(DataError, match=r"train\.txt: id '\.\./b' is not a plain file name"):
        build_dataset("folder", root, "train")
    (root / "labels.csv").write_text("a,cat\n,dog\n")  # an empty id
    with pytest.raises(DataError, match=r"labels\.csv: id '' is not a plain file name"):
        build_dataset("folder", root, "all")


def test_dot_dot_id_in_voc_split_is_refused(tmp_path):
    lists = tmp_path / "voc" / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (tmp_path / "voc" / "JPEGImages").mkdir()
    (lists / "train.txt").write_text("x\n..\n")
    with pytest.raises(DataError, match=r"train\.txt: id '\.\.' is not a plain file name"):
        build_dataset("voc", tmp_path / "voc", "train")


# 3. Duplicate ids are counted twice by train and eval (which open the split with the reader).


def test_duplicate_ids_in_a_split_are_refused(tmp_path):
    root = make_folder(tmp_path / "d", ("a", "b", "c"))
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("a\nb\na\nc\nb\n")
    with pytest.raises(DataError, match=r"val\.txt: 2 id\(s\) listed more than once .*'a', 'b'"):
        build_dataset("folder", root, "val")
    (root / "labels.csv").unlink()
    (root / "labels.json").write_text('{"a": ["cat"], "b": [], "a": []}')
    with pytest.raises(DataError, match=r"labels\.json: ids listed twice: \['a'\]"):
        build_dataset("folder", root, "all")


# 4. EXIF orientation: the photo is shown rotated, and its mask is drawn on the rotated view.


def test_exif_rotated_jpeg_lines_up_with_its_mask(tmp_path):
    root = make_folder(tmp_path / "d", ("a",))
    stored = np.zeros((8, 16, 3), np.uint8)
    stored[:4, :4] = 255  # a white corner, top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    (root / "images" / "a.png").unlink()
    Image.fromarray(stored).save(root / "images" / "a.jpg", quality=100, exif=exif)
    upright = np.zeros((16, 8), np.uint8)
    upright[:4, 4:] = 1  # the corner is top-right once rotated
    write_mask(root / "masks" / "a.png", upright)
    report = check_data(root, "folder", "all", progress=False)
    assert report.ok, report.problems
    assert (report.height_range, report.width_range) == ((16, 16), (8, 8))
    image = FolderDataset(root).load_image("a")
    assert image.shape == (16, 8, 3)
    assert image[:4, 4:].min() > 200 and image[4:].max() < 50 and image[:4, :4].max() < 50


# 5. A UTF-8 byte-order mark (Excel's "CSV UTF-8") in each text file.


@pytest.mark.parametrize("name", ["labels.csv", "classes.txt", "splits/all2.txt", "labels.json"])
def test_byte_order_mark_is_ignored(tmp_path, name):
    root = make_folder(tmp_path / "d")
    (root / "labels.csv").write_text("id,labels\na,cat\nb,dog\n")
    (root / "splits").mkdir()
    (root / "splits" / "all2.txt").write_text("a\nb\n")
    if name == "labels.json":
        (root / "labels.csv").unlink()
        (root / "labels.json").write_text('{"a": ["cat"], "b": ["dog"]}')
    path = root / name
    path.write_text(BOM + path.read_text(), encoding="utf-8")
    split = "all2" if name.startswith("splits") else "all"
    report = check_data(root, "folder", split, progress=False)
    assert report.ok, report.problems
    assert report.class_counts == {"cat": 1, "dog": 1}


# 6. A worker's failure mid-epoch, and an image missing from the split.


def train_args(data: Path, out: Path) -> list[str]:
    settings = ["data.crop_size=32", "data.resize_long=[32,40]", "train.epochs=1"]
    settings += ["train.batch_size=4", "train.num_workers=1", "train.val_every=0"]
    return ["train", "--config", "synth-demo", "--data", str(data), "--out", str(out), *settings]


def test_unreadable_image_in_a_worker_is_one_line(synth, tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    data = Path(shutil.copytree(synth, tmp_path / "synth"))
    first = (data / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    image = next((data / "JPEGImages").glob(f"{first}.*"))
    image.write_bytes(b"not an image")
    args = [*train_args(data, tmp_path / "run"), "--no-progress"]
    code, _, err = run_main(args, monkeypatch, capsys)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err and "Caught DataError" not in err
    assert f"{image}: unreadable or truncated image" in err


def test_missing_image_stops_training_before_it_starts(synth, tmp_path, monkeypatch, capsys):
    data = Path(shutil.copytree(synth, tmp_path / "synth"))
    split = data / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text(split.read_text() + "ghost1\nghost2\n")
    args = [*train_args(data, tmp_path / "run"), "--no-progress"]
    code, _, err = run_main(args, monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    assert "split 'train': 2 of 10 ids have no image file ('ghost1', 'ghost2')" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# 7. The class list: unreadable, missing, an empty name, a name twice.


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"cat\n\xe9t\xe9\n", "cannot read class list"),
        (None, "classes.txt"),
        (b"cat\ndog\n cat \n", "duplicate class names ['cat']"),
    ],
)
def test_bad_class_list_names_the_file(tmp_path, content, message):
    root = make_folder(tmp_path / "d")
    if content is None:
        (root / "classes.txt").unlink()
    else:
        (root / "classes.txt").write_bytes(content)
    report = check_data(root, "folder", "all", progress=False)
    assert [p.file for p in report.problems] == [str(root / "classes.txt")]
    assert message in report.problems[0].message


def test_empty_class_name_is_refused(tmp_path):
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    with pytest.raises(DataError, match="empty class name"):
        build_dataset("voc", root, "train", classes=["cat", " "])


# 8. check-data's --out: a folder, a file in the way, a failed write.


def test_out_is_a_folder_or_below_a_file(tmp_path, monkeypatch, capsys):
    root = make_folder(tmp_path / "d")
    args = ["check-data", "--data", str(root), "--format", "folder", "--split", "all"]
    code, _, err = run_main([*args, "--out", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and "is a folder" in err and "Traceback" not in err
    below = root / "classes.txt" / "report.json"
    code, _, err = run_main([*args, "--out", str(below)], monkeypatch, capsys)
    assert code == 2 and "classes.txt is a file, not a folder" in err and "Traceback" not in err


def test_failed_report_write_prints_the_report(tmp_path, monkeypatch, capsys):
    root = make_folder(tmp_path / "d")
    (root / "labels.csv").write_text("a,cat\nb,cat\nc,dog\n")  # c has no image

    def disk_full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("wsss.cli.data_cmds.atomic_write_json", disk_full)
    args = ["check-data", "--data", str(root), "--format", "folder", "--split", "all"]
    code, out, err = run_main([*args, "--out", str(tmp_path / "r.json")], monkeypatch, capsys)
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    report = json.loads(out[out.index("{\n") :])
    assert report["samples"] == 3 and report["problems_by_kind"] == {"missing image": 1}


# 9. User text through Rich markup: `[/x]` crashed, `[nan]` vanished.


def test_markup_in_class_names_and_errors_is_printed_verbatim(tmp_path, monkeypatch, capsys):
    root = make_folder(tmp_path / "d")
    (root / "classes.txt").write_text("[/x]\n[nan]\n")
    (root / "labels.csv").write_text("a,[/x]\nb,[small]\n")
    args = ["check-data", "--data", str(root), "--format", "folder", "--split", "all"]
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert "[/x] 1, [nan] 0" in result.output and "unknown class '[small]'" in result.output
    args = ["check-data", "--data", "[/x][nan]", "--split", "all"]
    code, _, err = run_main(args, monkeypatch, capsys)
    assert code == 2 and err == "error: [/x][nan]: dataset root not found (--data)\n"
