"""Planted faults in class-map files, run through ``wsss eval``.

Each map file below breaks one convention of the format (values in [0, 1], float dtype, one
channel per labelled class, unique keys, keys within the dataset's classes). Before, each gave
a number; now each stops with one line naming the file.
"""

from __future__ import annotations

import numpy as np
import pytest

from wsss.data.image_io import write_image, write_mask
from wsss.io.maps import ClassMaps, save_class_maps


@pytest.fixture
def data(tmp_path):
    """One 8×8 image with a cat (class id 1) on the left half, and good maps for it."""
    root = tmp_path / "voc"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    (root / "classes.txt").write_text("cat\ndog\n")
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 1
    write_image(root / "JPEGImages" / "a.jpg", np.full((8, 8, 3), 90, np.uint8))
    write_mask(root / "SegmentationClass" / "a.png", mask)
    return tmp_path


def good_maps() -> ClassMaps:
    hr = np.zeros((1, 8, 8), np.float32)
    hr[0, :, :4] = 0.9
    return ClassMaps(np.array([1]), hr[:, ::4, ::4], hr)


def write_raw(path, keys, hr) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, keys=np.asarray(keys), cam=np.asarray(hr)[:, ::4, ::4], hr=np.asarray(hr))


def eval_args(data) -> list:
    return ["eval", "--data", data / "voc", "--split", "train", "--maps", data / "maps"]


def test_good_maps_evaluate(data, run_cli):
    save_class_maps(data / "maps" / "a.npz", good_maps())
    code, out, err = run_cli(eval_args(data))
    assert code == 0, err
    assert "100.0" in out


def hr_with(value) -> np.ndarray:
    hr = good_maps().hr.copy()
    hr[0, 0, 0] = value
    return hr


@pytest.mark.parametrize(
    ("keys", "hr", "message"),
    [
        ([1], hr_with(-np.inf), "NaN or infinite"),
        ([1], hr_with(np.nan), "NaN or infinite"),
        ([1], hr_with(3.0), "must lie in [0, 1]"),
        ([1], hr_with(-0.5), "must lie in [0, 1]"),
        ([1], (good_maps().hr * 255).astype(np.uint8), "dtype uint8"),
        ([2], good_maps().hr, "no map for labelled class id(s) [1]"),
        ([1, 1], np.concatenate([good_maps().hr] * 2), "duplicate class keys"),
        ([1, 7], np.concatenate([good_maps().hr] * 2), "outside 1..2"),
    ],
    ids=["-inf", "nan", "above-1", "below-0", "uint8", "missing-channel", "dup-keys", "bad-key"],
)
def test_bad_maps_stop_with_the_file_named(data, run_cli, keys, hr, message):
    write_raw(data / "maps" / "a.npz", keys, hr)
    code, _, err = run_cli(eval_args(data))
    assert code == 2
    assert "a.npz" in err and message in err
    assert "Traceback" not in err
