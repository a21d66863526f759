"""The ``boundary`` training task: IRN's boundary network on affinity labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wsss.config import load_config
from wsss.data.datasets import build_dataset
from wsss.data.image_io import write_image, write_mask
from wsss.errors import ConfigError, DataError
from wsss.io.checkpoints import read_checkpoint
from wsss.io.masks import MaskStore
from wsss.models import load_model, save_model
from wsss.models.boundary import BoundaryNet, affinity_loss
from wsss.models.classifier import CAMClassifier
from wsss.refine.paths import PathIndex, affinity_targets
from wsss.train.engine import Trainer
from wsss.train.tasks import TASKS
from wsss.train.tasks.boundary import BoundaryTask, reduce_labels

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["cat", "dog"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("boundary")
    voc = root / "voc"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = [f"i{k}" for k in range(4)]
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    (voc / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(0)
    labels = MaskStore(root / "labels")
    for k, sample_id in enumerate(ids):
        image = rng.integers(0, 80, (40, 48, 3), dtype=np.uint8)
        mask = np.zeros((40, 48), np.uint8)
        mask[8:30, 10 + k : 36] = 1 + k % 2
        image[mask > 0] = 200
        write_image(voc / "JPEGImages" / f"{sample_id}.png", image)
        write_mask(voc / "SegmentationClass" / f"{sample_id}.png", mask)
        label = mask.copy()
        label[6:8] = 255  # unsure rows
        labels.save(sample_id, label)
    torch.manual_seed(1)
    classifier = CAMClassifier("resnet10t", num_classes=2, output_stride=8)
    ckpt = save_model(root / "cam", classifier, {"classes": CLASSES})
    return {"voc": voc, "labels": root / "labels", "classifier": ckpt, "root": root}


def _config(setup, **args):
    strategy_args = {"labels": str(setup["labels"]), "classifier": str(setup["classifier"])}
    strategy_args.update(args)
    return load_config(
        "synth-boundary",
        [
            ("data.root", str(setup["voc"])),
            ("data.split", "train"),
            ("data.crop_size", 32),
            ("data.resize_long", [32, 48]),
            ("train.batch_size", 2),
            ("train.epochs", 1),
            ("train.num_workers", 0),
            ("train.device", "cpu"),
            ("train.log_every", 1),
            ("train.strategy_args", {**strategy_args, "radius": 4}),
        ],
    )


def test_reduce_labels_picks_pixel_4i_plus_2():
    masks = torch.arange(10 * 11).view(1, 10, 11)
    reduced = reduce_labels(masks, 3, 3)
    rows, cols = [2, 6, 9], [2, 6, 10]  # the last ones clamped to the crop
    assert torch.equal(reduced[0], masks[0][rows][:, cols])


def test_boundary_presets_follow_irn():
    config = load_config("voc12-boundary")
    tc = config.train
    assert (tc.task, tc.batch_size, tc.epochs, tc.lr, tc.weight_decay) == (
        "boundary",
        32,
        3,
        0.1,
        1e-4,
    )
    assert tc.lr_multipliers == (1.0, 1.0, 1.0, 1.0) and tc.strategy_args["radius"] == 10
    assert (config.data.crop_size, config.data.resize_long) == (512, (320, 640))
    assert TASKS.get("boundary") is BoundaryTask
    assert PathIndex(10).num_directions == 152 and PathIndex(5).num_directions == 34


def test_training_moves_the_branch_only_and_exports_a_boundary_net(setup, tmp_path):
    config = _config(setup)
    dataset = build_dataset("voc", setup["voc"], "train")
    trainer = Trainer(config, tmp_path / "run", dataset, progress=False)
    net = trainer.task.model
    cam, _, _ = read_checkpoint(setup["classifier"])
    # The frozen backbone starts as the classifier's.
    shared = [n for n in net.backbone.state_dict() if f"backbone.{n}" in cam]
    assert len(shared) == len(net.backbone.state_dict())
    for name in shared:
        assert torch.equal(net.backbone.state_dict()[name], cam[f"backbone.{name}"]), name
    head_before = net.head.weight.detach().clone()
    backbone_before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    trainer.fit()
    assert not torch.equal(net.head.weight, head_before)
    for k, v in net.backbone.state_dict().items():
        assert torch.equal(v, backbone_before[k]), k  # weights and BN statistics frozen
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(x["loss"]) for x in lines if "loss" in x)
    assert {"bg_pos", "fg_pos", "neg"} <= set(lines[0])
    model, meta = load_model(tmp_path / "run")
    assert isinstance(model, BoundaryNet) and meta["task"] == "boundary"
    assert meta["radius"] == 4 and meta["labels"] == str(setup["labels"])


def test_loss_equals_the_affinity_loss_of_the_reduced_labels(setup):
    config = _config(setup)
    task = BoundaryTask(config, CLASSES, BoundaryTask.Args(**config.train.strategy_args)).eval()
    images = torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, 32, 32, dtype=torch.uint8)
    masks[:, 8:24, 4:20] = 1
    masks[1, :4] = 255

    class B:
        pass

    batch = B()
    batch.images, batch.masks = images, masks
    out = task.loss("main", batch, None)
    logits = task.model(images)[:, 0]
    index = PathIndex(4)
    labels = masks[:, 2::4, 2::4]
    targets = affinity_targets(labels, index)
    expected, _ = affinity_loss(index.affinity(torch.sigmoid(logits)), *targets)
    assert torch.allclose(out.loss, expected)


def test_missing_labels_and_settings_are_reported(setup, tmp_path):
    dataset = build_dataset("voc", setup["voc"], "train")
    with pytest.raises(ConfigError, match=r"strategy_args\.labels"):
        Trainer(_config(setup, labels=None), tmp_path / "a", dataset, progress=False)
    few = MaskStore(tmp_path / "few")
    few.save("i0", MaskStore(setup["labels"]).load("i0"))
    with pytest.raises(DataError, match="no affinity labels for 3 of the 4"):
        Trainer(_config(setup, labels=str(few.root)), tmp_path / "b", dataset, progress=False)
