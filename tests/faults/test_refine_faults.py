"""Faults planted in the refinement commands: each ends in one clear line (exit 2), never a
traceback, and nothing is overwritten silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.data.image_io import write_image, write_mask
from wsss.io.maps import ClassMaps, MapStore
from wsss.models import save_model
from wsss.models.classifier import CAMClassifier

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def setup(tmp_path: Path) -> dict:
    voc = tmp_path / "voc"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    (voc / "classes.txt").write_text("cat\ndog\n")
    maps = MapStore(tmp_path / "maps")
    rng = np.random.default_rng(0)
    for sample_id in ("a", "b"):
        mask = np.zeros((20, 24), np.uint8)
        mask[2:12, 2:12] = 1
        write_image(voc / "JPEGImages" / f"{sample_id}.png", rng.integers(0, 255, (20, 24, 3)))
        write_mask(voc / "SegmentationClass" / f"{sample_id}.png", mask)
        hr = rng.random((1, 20, 24)).astype(np.float32)
        maps.save(sample_id, ClassMaps([1], hr[:, ::4, ::4], hr))
    torch.manual_seed(0)
    classifier = save_model(
        tmp_path / "cam", CAMClassifier("resnet10t", num_classes=2), {"classes": ["cat", "dog"]}
    )
    return {"voc": voc, "maps": maps.root, "classifier": classifier, "tmp": tmp_path}


def test_random_walk_with_a_classifier_checkpoint(run_cli, setup):
    code, _, err = run_cli(
        ["random-walk", "--data", setup["voc"], "--maps", setup["maps"], "--out",
         setup["tmp"] / "rw", "--boundary", setup["classifier"], "--device", "cpu"]
    )  # fmt: skip
    assert code == 2 and "not a boundary network" in err and "Traceback" not in err
    assert "wsss train --task boundary" in " ".join(err.split())


def test_masks_of_a_wrong_size(run_cli, setup):
    store = MapStore(setup["maps"])
    hr = np.ones((1, 10, 10), np.float32)
    store.save("b", ClassMaps([1], hr[:, ::4, ::4], hr))
    code, _, err = run_cli(
        ["masks", "--data", setup["voc"], "--maps", setup["maps"], "--threshold", "0.3",
         "--out", setup["tmp"] / "seeds"]
    )  # fmt: skip
    assert code == 2 and "b.npz" in err and "10×10" in err


def test_boundary_training_without_labels(run_cli, setup):
    code, _, err = run_cli(
        ["train", "--config", "synth-boundary", "--data", setup["voc"], "--out",
         setup["tmp"] / "run", "--device", "cpu", "--set", "data.split=train"]
    )  # fmt: skip
    assert code == 2 and "train.strategy_args.labels" in " ".join(err.split())


def test_affinity_over_a_folder_of_other_labels_is_refused(run_cli, setup):
    base = ["affinity", "--data", setup["voc"], "--maps", setup["maps"], "--out",
            setup["tmp"] / "aff", "--no-crf"]  # fmt: skip
    assert run_cli(base)[0] == 0
    code, _, err = run_cli([*base, "--preset", "lpcam"])
    assert code == 2 and "other settings" in err and "--restart" in " ".join(err.split())
    assert run_cli([*base, "--preset", "lpcam", "--restart"])[0] == 0
