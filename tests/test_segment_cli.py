"""``wsss train --task segmentation --masks`` and ``wsss segment`` end to end on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from wsss.cli import app
from wsss.cli.options import TaskName
from wsss.data.datasets import build_dataset
from wsss.data.synthetic import SynthConfig, generate_synthetic
from wsss.errors import ConfigError
from wsss.io.masks import MaskStore
from wsss.train.tasks import TASKS

TINY = """\
extends: synth-segmentation
data:
  crop_size: 48
  resize_long: [48, 64]
train:
  epochs: 1
  batch_size: 4
  num_workers: 0
"""


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    config = SynthConfig(
        seed=1,
        train=8,
        val=3,
        size_min=64,
        size_max=72,
        head_size=(8, 12),
        body_length=(20, 30),
        body_width=(6, 10),
    )
    generate_synthetic(root, config, progress=False)
    return root


def test_train_on_a_mask_folder_then_segment_and_evaluate(synth: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY)
    # "Pseudo masks": the ground truth with its right half ignored.
    train = build_dataset("voc", synth, "train")
    masks = MaskStore(tmp_path / "pseudo")
    for sample_id in train.ids:
        mask = train.load_mask(sample_id).copy()
        mask[:, mask.shape[1] // 2 :] = 255
        masks.save(sample_id, mask)
    runner = CliRunner()
    args = ["train", "--config", str(preset), "--data", str(synth), "--out", str(tmp_path / "run")]
    options = ["--task", "segmentation", "--masks", str(masks.root), "--device", "cpu"]
    result = runner.invoke(app, [*args, *options, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "trained segmentation" in result.output and "val/miou" in result.output
    meta = json.loads((tmp_path / "run/checkpoints/last.json").read_text())
    assert meta["masks"] == str(masks.root) and meta["architecture"]["type"] == "deeplabv3plus"

    out = tmp_path / "val"
    segment = ["segment", "--checkpoint", str(tmp_path / "run"), "--data", str(synth)]
    segment += ["--out", str(out), "--device", "cpu", "--no-progress"]
    result = runner.invoke(app, [*segment, "--scales", "1.0", "--set", "flip=false"])
    assert result.exit_code == 0, result.output
    assert "3 masks written" in result.output and "mIoU" in result.output
    record = json.loads((out / "masks.json").read_text())
    assert record["scales"] == [1.0] and record["flip"] is False and record["complete"]
    val = build_dataset("voc", synth, "val")
    assert MaskStore(out).ids() == sorted(val.ids)
    assert MaskStore(out).load(val.ids[0]).shape == val.load_image(val.ids[0]).shape[:2]

    # A rerun resumes; other settings are refused with the way out in the message.
    result = runner.invoke(app, [*segment, "--scales", "1.0", "--no-flip", "--no-eval"])
    assert result.exit_code == 0 and "0 masks written, 3 already there" in result.output
    result = runner.invoke(app, [*segment, "--no-eval"])
    assert isinstance(result.exception, ConfigError) and "--restart" in str(result.exception)
    before = MaskStore(out).load(val.ids[0])
    result = runner.invoke(app, [*segment, "--no-eval", "--restart", "--scales", "0.5,1"])
    assert result.exit_code == 0 and "3 masks written" in result.output
    assert np.asarray(MaskStore(out).load(val.ids[0])).shape == before.shape


def test_masks_need_the_segmentation_task(synth: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["train", "--config", "synth-demo", "--data", str(synth), "--masks", str(tmp_path)],
    )
    assert isinstance(result.exception, ConfigError)
    assert "--masks" in str(result.exception) and "--task segmentation" in str(result.exception)


def test_segment_refuses_a_checkpoint_of_other_classes(synth: Path, tmp_path: Path) -> None:
    from wsss.models import save_model
    from wsss.models.segmentation import DeepLabV3Plus

    model = DeepLabV3Plus("resnet10t", num_classes=3)
    save_model(tmp_path / "seg", model, {"classes": ["cat", "dog"]})
    args = ["segment", "--checkpoint", str(tmp_path / "seg.safetensors"), "--data", str(synth)]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert isinstance(result.exception, ConfigError)
    assert "trained on classes ['cat', 'dog']" in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_task_choices_match_the_registry() -> None:
    shipped = [n for n in TASKS.names() if not n.startswith("_")]  # "_": test doubles
    assert sorted(t.value for t in TaskName) == shipped
