"""``wsss cams`` on a tiny VOC-layout dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from wsss.cli import app
from wsss.data.image_io import read_image, write_image, write_mask
from wsss.errors import ConfigError
from wsss.io.maps import load_class_maps
from wsss.maps.cam import cam_maps
from wsss.models import save_model
from wsss.models.classifier import CAMClassifier

CLASSES = ["cat", "dog"]
SIZES = {"a": (30, 44), "b": (26, 20), "c": (30, 44)}
MASK_CLASSES = {"a": [1], "b": [1, 2], "c": [2]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, CAMClassifier]:
    root = tmp_path_factory.mktemp("cli")
    voc = root / "voc"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(SIZES) + "\n")
    (voc / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(0)
    for sample_id, (h, w) in SIZES.items():
        write_image(
            voc / "JPEGImages" / f"{sample_id}.png",
            rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        )
        mask = np.zeros((h, w), dtype=np.uint8)
        for k, c in enumerate(MASK_CLASSES[sample_id]):
            mask[k * 5 : k * 5 + 4, :6] = c
        write_mask(voc / "SegmentationClass" / f"{sample_id}.png", mask)
    torch.manual_seed(0)
    model = CAMClassifier("resnet10t", num_classes=2, output_stride=16).eval()
    with torch.no_grad():  # same-sign class rows: see tests/test_maps_cam.py
        model.head.weight.copy_(model.head.weight.abs() * 100)
    ckpt = save_model(root / "ckpt", model, {"classes": CLASSES})
    return voc, ckpt, model


def invoke(*args):
    return CliRunner().invoke(app, ["cams", *map(str, args)])


def test_cams_writes_the_maps_of_the_split(setup, tmp_path):
    voc, ckpt, model = setup
    out = tmp_path / "cams"
    common = ["--checkpoint", ckpt, "--data", voc, "--out", out, "--scales", "1.0,0.5"]
    result = invoke(*common, "--device", "cpu", "--batch", "2", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "3 maps written, 0 already there" in result.output
    for sample_id, present in MASK_CLASSES.items():
        written = load_class_maps(out / f"{sample_id}.npz")
        assert written.keys.tolist() == present
        image = read_image(voc / "JPEGImages" / f"{sample_id}.png")
        direct = cam_maps(model, image, [c - 1 for c in present], scales=(1.0, 0.5))
        assert np.abs(written.hr - direct.hr).max() < 1e-5
        assert np.abs(written.cam - direct.cam).max() < 1e-5
    manifest = json.loads((out / "maps.json").read_text())
    assert manifest["method"] == "cam" and manifest["scales"] == [1.0, 0.5]
    assert manifest["count"] == 3 and manifest["checkpoint"] == str(ckpt)

    again = invoke(*common, "--device", "cpu", "--workers", "0")
    assert again.exit_code == 0 and "0 maps written, 3 already there" in again.output


def test_set_reaches_the_maps_settings(setup, tmp_path):
    voc, ckpt, _ = setup
    out = tmp_path / "cams"
    args = ["--checkpoint", ckpt, "--data", voc, "--out", out, "--workers", "0"]
    result = invoke(*args, "--set", "maps.scales=[0.5]", "--set", "maps.device=cpu")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "maps.json").read_text())["scales"] == [0.5]
    bad = invoke(*args, "--set", "maps.scales=[0]")
    assert isinstance(bad.exception, ConfigError) and "maps.scales" in str(bad.exception)


def test_cams_reports_bad_options(setup, tmp_path):
    voc, ckpt, _ = setup
    common = ["--checkpoint", ckpt, "--data", voc, "--out", tmp_path, "--workers", "0"]
    for extra, message in (
        (["--scales", "1.0,x"], "comma-separated"),
        (["--scales", "1.0,-1"], "positive"),
        (["--classes", "all"], "gt or predicted"),
    ):
        result = invoke(*common, *extra)
        assert isinstance(result.exception, ConfigError), result.output
        assert message in str(result.exception)
