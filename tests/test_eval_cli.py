"""``wsss eval`` end to end on a tiny VOC-layout dataset."""

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from wsss.cli import app
from wsss.data.image_io import write_image, write_mask
from wsss.errors import ConfigError
from wsss.io.maps import ClassMaps, save_class_maps

IDS = ["a", "b", "c"]


@pytest.fixture
def voc(tmp_path):
    """VOC layout with two classes, part codes, GT-derived maps and GT masks as predictions."""
    root = tmp_path / "voc"
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(IDS) + "\n")
    (root / "classes.txt").write_text("cat\ndog\n")
    for i, sample_id in enumerate(IDS):
        h, w = 20 + 2 * i, 24
        mask = np.zeros((h, w), np.uint8)
        mask[3:12, 4:14] = 1
        mask[10:18, 12:22] = 2 if i != 1 else 1
        mask[2, :] = 255
        parts = np.where(mask == 0, 0, 2).astype(np.uint8)
        parts[mask == 255] = 255
        parts[4:6, 5:7] = 1
        write_image(root / "JPEGImages" / f"{sample_id}.jpg", rng.integers(0, 255, (h, w, 3)))
        write_mask(root / "SegmentationClass" / f"{sample_id}.png", mask)
        write_mask(root / "SegmentationPart" / f"{sample_id}.png", parts)
        write_mask(tmp_path / "pred" / f"{sample_id}.png", np.where(mask == 255, 0, mask))
        keys = np.unique(mask[(mask > 0) & (mask < 255)])
        hr = np.stack([np.where(mask == k, 0.8, 0.1) for k in keys]).astype(np.float32)
        save_class_maps(
            tmp_path / "maps" / f"{sample_id}.npz", ClassMaps(keys, hr[:, ::4, ::4], hr)
        )
    return tmp_path


def _run(*args):
    return CliRunner().invoke(app, ["eval", *map(str, args)], catch_exceptions=True)


def test_eval_masks_gives_100_and_writes_json(voc):
    out = voc / "res" / "masks.json"
    result = _run("--data", voc / "voc", "--split", "train", "--masks", voc / "pred", "--out", out)
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["miou"] == 100.0 and saved["oracle"] is False and saved["num_images"] == 3
    assert saved["head_recall"] == 100.0 and saved["background_fp"] == 0.0
    assert "mean" in result.output and "100.0" in result.output


def test_eval_maps_sweep_writes_curve(voc):
    out = voc / "res" / "maps.json"
    result = _run(
        "--data", voc / "voc", "--split", "train", "--maps", voc / "maps", "--sweep", "--groups",
        "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["oracle"] is True and len(saved["sweep"]) == 19
    # maps are 0.8 on their class and 0.1 elsewhere: every threshold in [0.1, 0.8) is perfect
    assert saved["threshold"] == 0.1 and saved["miou"] == 100.0
    # (0.05: background pixels at 0.1 turn into a class; >= 0.8: ties go to background)
    perfect = [row["threshold"] for row in saved["sweep"] if row["miou"] == 100.0]
    assert perfect == pytest.approx(np.arange(0.10, 0.76, 0.05))
    assert saved["groups"]["groups"]["size"]
    assert (voc / "res" / "maps_curve.png").is_file()


def test_eval_option_errors(voc):
    data = ["--data", voc / "voc", "--split", "train"]
    result = _run(*data)
    assert isinstance(result.exception, ConfigError) and "exactly one" in str(result.exception)
    result = _run(*data, "--masks", voc / "pred", "--sweep")
    assert isinstance(result.exception, ConfigError)
    result = _run(*data, "--maps", voc / "maps", "--sweep", "--threshold", "0.3")
    assert isinstance(result.exception, ConfigError)


def test_console_script_reports_one_line_and_exit_2(voc):
    (voc / "pred" / "b.png").unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "wsss", "eval", "--data", str(voc / "voc"), "--split", "train",
         "--masks", str(voc / "pred")],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "b.png" in proc.stderr and "Traceback" not in proc.stderr


def test_eval_user_groups_from_file(voc):
    groups = voc / "groups.yaml"
    groups.write_text("pets:\n  - cat\n  - dog\n")
    out = voc / "g.json"
    args = ["--data", voc / "voc", "--split", "train", "--masks", voc / "pred", "--out", out]
    result = _run(*args, "--group-file", groups)
    assert result.exit_code == 0, result.output
    pets = json.loads(out.read_text())["groups"]["groups"]["user"]["pets"]
    assert pets["classes"] == ["cat", "dog"] and pets["iou"] == 100.0
    groups.write_text("pets: [cat, zebra]\n")
    result = _run(*args, "--group-file", groups)
    assert isinstance(result.exception, ConfigError) and "zebra" in str(result.exception)
    groups.write_text("- cat\n")
    result = _run(*args, "--group-file", groups)
    assert isinstance(result.exception, ConfigError) and "mapping" in str(result.exception)
