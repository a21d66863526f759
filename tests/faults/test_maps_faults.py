"""Planted faults in the map commands (``wsss cams``, ``wsss maps``, ``wsss lpcam``).

Each test plants one fault a user meets for real and runs the command: the result is a clear
error naming the file or setting, never a silently wrong folder of maps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from wsss.cli import app
from wsss.data.image_io import write_image, write_mask
from wsss.errors import ConfigError, DataError
from wsss.io.maps import ClassMaps, MapStore, save_class_maps
from wsss.maps.tta import DEFAULT_SCALES, check_input_size
from wsss.models import save_model
from wsss.models.classifier import CAMClassifier

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["cat", "dog"]
SIZES = {"a": (30, 44), "b": (26, 20), "c": (30, 44)}
MASK_CLASSES = {"a": [1], "b": [1, 2], "c": [2]}


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("faults")
    voc = root / "voc"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(SIZES) + "\n")
    (voc / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(0)
    for sample_id, (h, w) in SIZES.items():
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        write_image(voc / "JPEGImages" / f"{sample_id}.png", image)
        mask = np.zeros((h, w), dtype=np.uint8)
        for k, c in enumerate(MASK_CLASSES[sample_id]):
            mask[k * 5 : k * 5 + 4, :6] = c
        write_mask(voc / "SegmentationClass" / f"{sample_id}.png", mask)
    torch.manual_seed(0)
    model = CAMClassifier("resnet10t", num_classes=2, output_stride=16).eval()
    with torch.no_grad():  # same-sign class rows: maps that are not all zero
        model.head.weight.copy_(model.head.weight.abs() * 100)
    ckpt = save_model(root / "ckpt", model, {"classes": CLASSES})
    return voc, ckpt


def cams(voc: tuple[Path, Path], out: Path, *extra: str):
    data, ckpt = voc
    args = ["cams", "--checkpoint", ckpt, "--data", data, "--out", out, "--device", "cpu"]
    return CliRunner().invoke(app, [*map(str, args), "--workers", "0", *extra])


class Killed(Exception):
    """Stands for the process dying (Ctrl-C, SIGKILL, a full disk) in the middle of a run."""


def test_rerun_with_other_scales_after_an_interruption_refuses(voc, tmp_path, monkeypatch):
    out = tmp_path / "cams"
    savez, written = np.savez, []

    def dies_after_one(*args, **kwargs):
        if written:
            raise Killed
        written.append(savez(*args, **kwargs))

    monkeypatch.setattr(np, "savez", dies_after_one)
    result = cams(voc, out, "--scales", "1.0,0.5")
    assert isinstance(result.exception, Killed)
    monkeypatch.setattr(np, "savez", savez)
    kept = (out / "a.npz").read_bytes()

    result = cams(voc, out, "--scales", "1.0")  # would label old maps with the new scales
    assert isinstance(result.exception, ConfigError), result.output
    message = str(result.exception)
    assert "scales: [1.0, 0.5] → [1.0]" in message and "--restart" in message
    assert (out / "a.npz").read_bytes() == kept and not (out / "b.npz").exists()

    result = cams(voc, out, "--scales", "1.0", "--restart")
    assert result.exit_code == 0, result.output
    store = MapStore(out)
    assert store.is_complete() and store.manifest()["scales"] == [1.0]
    assert (out / "a.npz").read_bytes() != kept  # recomputed with the new scales


def test_maps_without_a_settings_record_are_refused(voc, tmp_path):
    out = tmp_path / "cams"
    save_class_maps(
        out / "a.npz", ClassMaps(keys=[1], cam=np.zeros((1, 8, 11)), hr=np.zeros((1, 30, 44)))
    )
    result = cams(voc, out, "--scales", "1.0")
    assert isinstance(result.exception, ConfigError)
    assert "1 map files but no settings record" in str(result.exception)
    result = cams(voc, out, "--scales", "1.0", "--restart")
    assert result.exit_code == 0, result.output
    assert MapStore(out).is_complete() and len(MapStore(out).ids()) == 3


def test_a_huge_image_is_refused_before_computing(voc, tmp_path):
    out = tmp_path / "cams"
    result = cams(voc, out, "--max-input-megapixels", "0.003")
    assert isinstance(result.exception, DataError), result.output
    message = str(result.exception)
    assert message.startswith("a: image of 44×30 pixels is 88×60 (0.00528 Mpx) at scale 2")
    assert "GB of memory" in message and "--max-input-megapixels" in message
    assert MapStore(out).ids() == []


def test_a_6000x4000_photo_with_the_default_scales_needs_29_gb():
    with pytest.raises(DataError, match=r"12000×8000 \(96 Mpx\).* about 29 GB"):
        check_input_size((4000, 6000), DEFAULT_SCALES, where="photo")
    check_input_size((4000, 6000), (1.0,))  # 24 Mpx at scale 1 is under the default cap
    check_input_size((4000, 6000), DEFAULT_SCALES, max_megapixels=None)


def test_nan_maps_in_lpcam_fit_name_the_file(voc, tmp_path):
    data, ckpt = voc
    out = tmp_path / "cams"
    assert cams(voc, out, "--scales", "1.0").exit_code == 0
    broken = MapStore(out).load("b")
    broken.hr[0, 0, 0] = np.nan
    np.savez(out / "b.npz", keys=broken.keys, cam=broken.cam, hr=broken.hr)
    args = ["lpcam", "fit", "--checkpoint", ckpt, "--data", data, "--cams", out]
    args += ["--out", tmp_path / "p.safetensors", "--k", "2", "--device", "cpu"]
    result = CliRunner().invoke(app, list(map(str, args)))
    assert isinstance(result.exception, DataError)
    assert f"{out / 'b.npz'}: 'hr' holds NaN" in str(result.exception)
    assert not (tmp_path / "p.safetensors").exists()


def test_generic_command_names_a_missing_input_and_a_bad_one(voc, tmp_path):
    data, ckpt = voc
    common = ["maps", "--checkpoint", ckpt, "--data", data, "--out", tmp_path, "--device", "cpu"]
    result = CliRunner().invoke(app, [*map(str, common), "--method", "lpcam"])
    assert isinstance(result.exception, ConfigError)
    assert "needs prototypes" in str(result.exception)
    result = CliRunner().invoke(app, [*map(str, common), "--method", "cam", "--input", "x"])
    assert isinstance(result.exception, ConfigError) and "NAME=PATH" in str(result.exception)
    result = CliRunner().invoke(app, [*map(str, common), "--method", "nope"])
    assert isinstance(result.exception, ConfigError)
    assert "known: cam, lpcam, lpcam_f" in str(result.exception)
