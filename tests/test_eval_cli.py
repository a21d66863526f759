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
    # the P-NOC code's grid, 0.05…0.80 step 0.05
    assert saved["oracle"] is True and len(saved["sweep"]) == 16
    assert saved["thresholds"] == pytest.approx(np.arange(0.05, 0.81, 0.05))
    assert [row["threshold"] for row in saved["sweep"]] == saved["thresholds"]
    assert "threshold sweep 0.05:0.80:0.05 (16 thresholds)" in result.output
    # maps are 0.8 on their class and 0.1 elsewhere: every threshold in [0.1, 0.8) is perfect
    assert saved["threshold"] == 0.1 and saved["miou"] == 100.0
    # (0.05: background pixels at 0.1 turn into a class; >= 0.8: ties go to background)
    perfect = [row["threshold"] for row in saved["sweep"] if row["miou"] == 100.0]
    assert perfect == pytest.approx(np.arange(0.10, 0.76, 0.05))
    assert saved["groups"]["groups"]["size"]
    assert (voc / "res" / "maps_curve.png").is_file()


def _table_row(output: str, label: str) -> list[str]:
    """The cells of the first table row of ``output`` that starts with ``label``."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in:\n{output}")


def test_eval_sweep_reports_the_fixed_threshold_beside_the_oracle(voc):
    data = ["--data", voc / "voc", "--split", "train", "--maps", voc / "maps"]
    out = voc / "res" / "sweep.json"
    result = _run(*data, "--sweep", "--threshold", "0.05", "--out", out)
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    single = voc / "res" / "single.json"
    assert _run(*data, "--threshold", "0.05", "--out", single).exit_code == 0
    alone = json.loads(single.read_text())
    # The fixed entry is the plain evaluation at 0.05; the top level is the oracle at 0.1.
    fixed = saved["fixed"]
    assert fixed["threshold"] == 0.05 and fixed["oracle"] is False
    for key in ("miou", "fp", "fn", "precision", "recall", "head_recall", "per_class"):
        assert fixed[key] == alone[key], key
    # at 0.05 the background (0.1 in the maps) is all predicted as a class: IoU 0
    assert fixed["per_class"]["background"]["iou"] == 0.0 and fixed["miou"] < 50
    assert saved["oracle"] is True and saved["threshold"] == 0.1 and saved["miou"] == 100.0
    assert _table_row(result.output, "fixed")[:2] == ["0.05", f"{fixed['miou']:.1f}"]
    assert _table_row(result.output, "oracle")[:2] == ["0.1", "100.0"]
    assert "threshold 0.05 (fixed)" in result.output  # per-class table: the honest one
    # Without --threshold the fixed result is at 0.3.
    result = _run(*data, "--sweep", "--out", out)
    assert json.loads(out.read_text())["fixed"]["threshold"] == 0.3
    assert _table_row(result.output, "fixed")[0] == "0.3"


def test_eval_thresholds_option_sets_the_grid(voc):
    data = ["--data", voc / "voc", "--split", "train", "--maps", voc / "maps"]
    out = voc / "grid.json"
    result = _run(*data, "--thresholds", "0.1:0.9:0.2", "--out", out)  # implies --sweep
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["oracle"] is True
    assert saved["thresholds"] == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    assert [row["threshold"] for row in saved["sweep"]] == saved["thresholds"]
    assert "threshold sweep 0.10:0.90:0.20 (5 thresholds)" in result.output
    result = _run(*data, "--thresholds", "0.85,0.1", "--threshold", "0.85", "--out", out)
    saved = json.loads(out.read_text())
    assert saved["thresholds"] == [0.1, 0.85] and saved["threshold"] == 0.1
    assert saved["fixed"]["miou"] < saved["miou"]  # 0.85 is above every map: all background
    assert "threshold sweep 0.10,0.85 (2 thresholds)" in result.output


def test_eval_option_errors(voc):
    data = ["--data", voc / "voc", "--split", "train"]
    result = _run(*data)
    assert isinstance(result.exception, ConfigError) and "exactly one" in str(result.exception)
    result = _run(*data, "--masks", voc / "pred", "--sweep")
    assert isinstance(result.exception, ConfigError)
    result = _run(*data, "--masks", voc / "pred", "--thresholds", "0.1,0.2")
    assert isinstance(result.exception, ConfigError)
    for bad in ("0.1-0.9", "0.9:0.1:0.1", "0.1:0.9:0", "a,b", "0.1,nan"):
        result = _run(*data, "--maps", voc / "maps", "--thresholds", bad)
        assert isinstance(result.exception, ConfigError), bad
        assert "START:STOP:STEP" in str(result.exception), bad


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
