"""The segmentation stages: train on a mask folder, predict the val split, results entry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.config import DataConfig, load_config
from wsss.data.datasets import build_dataset
from wsss.data.synthetic import SynthConfig, generate_synthetic
from wsss.evaluate import evaluate
from wsss.io.masks import MaskStore
from wsss.pipeline import Pipeline, PipelineConfig, RunDir, segmentation_stages
from wsss.pipeline.segmentation import SegmentationStage

TINY = [
    "segmentation.model.backbone=resnet10t",
    "segmentation.model.pretrained=false",
    "segmentation.train.epochs=1",
    "segmentation.train.batch_size=4",
    "segmentation.train.device=cpu",
    "segmentation.train.num_workers=0",
    "segmentation.train.select_by=null",
    "segmentation.crop_size=48",
    "segmentation.resize_long=[48,64]",
    "segmentation.infer.scales=[1.0]",
    "segmentation.infer.flip=false",
    "segmentation.infer.device=cpu",
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    config = SynthConfig(
        seed=2,
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


def _stages(synth: Path, masks: Path, *extra: str):
    config = load_config(None, [*TINY, *extra], cls=PipelineConfig)
    data = DataConfig(root=str(synth), split="train")
    return segmentation_stages(config.segmentation, data, masks, progress=False)


def test_the_stages_train_predict_evaluate_and_resume(synth: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    train = build_dataset("voc", synth, "train")
    masks = MaskStore(tmp_path / "pseudo")
    for sample_id in train.ids:
        masks.save(sample_id, train.load_mask(sample_id))
    run = RunDir(tmp_path / "run")
    stages = _stages(synth, masks.root)
    assert [s.name for s in stages] == [
        "train_segmentation",
        "predict_segmentation",
        "eval_segmentation",
    ]
    reports = Pipeline(stages).run(run)
    assert [r.status for r in reports] == ["ran"] * 3

    meta = json.loads((run.train_dir("segmentation") / "checkpoints/last.json").read_text())
    assert meta["masks"] == str(masks.root.resolve()) and "val/miou" in meta["metrics"]
    folder = SegmentationStage.folder(run, "val")
    assert MaskStore(folder).is_complete() and len(MaskStore(folder).ids()) == 3
    entry = run.results()["segmentation"]
    val = build_dataset("voc", synth, "val")
    expected = evaluate(val, masks_dir=folder, progress=False)
    assert entry["kind"] == "segmentation" and entry["miou"] == pytest.approx(expected["miou"])
    assert entry["split"] == "val" and entry["num_images"] == 3
    confusion = np.array(entry["confusion"])
    assert confusion.shape == (val.num_classes + 1,) * 2
    labelled = sum(int((val.load_mask(i) != 255).sum()) for i in val.ids)
    assert confusion.sum() == labelled
    # Single-scale prediction without flip is what the validation hook measures.
    assert meta["metrics"]["val/miou"] == pytest.approx(entry["miou"], abs=1e-6)

    # Nothing changed: everything is skipped. Other inference settings: predict and evaluate
    # again, the network is kept.
    assert [r.status for r in Pipeline(_stages(synth, masks.root)).run(run)] == ["skipped"] * 3
    rerun = Pipeline(_stages(synth, masks.root, "segmentation.infer.flip=true")).run(run)
    assert [r.status for r in rerun] == ["skipped", "ran", "ran"]
    assert json.loads((folder / "masks.json").read_text())["flip"] is True
    # A neutral setting (the device) changes nothing.
    neutral = Pipeline(
        _stages(synth, masks.root, "segmentation.infer.flip=true", "segmentation.infer.workers=1")
    ).run(run)
    assert [r.status for r in neutral] == ["skipped"] * 3


def test_the_demo_preset_configures_a_cpu_network() -> None:
    config = load_config("demo", cls=PipelineConfig)
    assert config.segmentation.model.backbone == "resnet10t"
    assert config.segmentation.train.task == "segmentation"
    # Without a preset the section holds the P-NOC code's recipe.
    paper = PipelineConfig().segmentation
    assert (paper.train.lr, paper.train.weight_decay, paper.train.momentum) == (0.007, 4e-5, 0.9)
    assert paper.train.nesterov and paper.train.schedule == "poly"
    assert paper.infer.scales == (0.5, 1.0, 1.5, 2.0) and paper.crop_size == 512
    assert paper.training_config(DataConfig(root="x"), None).train.strategy_args["masks"] is None
