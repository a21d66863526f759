"""The task seam: a task that is not a CAM classifier trains through the same engine.

A toy segmentation task (a 1×1 convolution trained with cross-entropy on masks) goes through
the loop, CutMix, validation, export and the model registry without any special case in the
engine; masks follow CutMix, and MixUp, which cannot mix hard masks, is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wsss.config import load_config
from wsss.data.base import SegmentationDataset
from wsss.data.transforms import BatchMix, EvalTransform, denormalize
from wsss.errors import ConfigError
from wsss.models import MODELS, load_model
from wsss.train.engine import Trainer
from wsss.train.tasks import TASKS, LossOutput, StepContext, Task, resolve_task

pytestmark = pytest.mark.usefixtures("one_thread")


class Squares(SegmentationDataset):
    """Dark noise with one pure-colour square per image; its mask marks the square's class."""

    def __init__(self, n: int = 8, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.root, self.split, self.classes = Path("."), "train", ["red", "green", "blue"]
        self.ids = [str(i) for i in range(n)]
        self.images = rng.integers(0, 40, (n, 36, 40, 3), dtype=np.uint8)
        self.masks = np.zeros((n, 36, 40), np.uint8)
        self.labels = np.zeros((n, 3), np.float32)
        for i in range(n):
            c = i % 3
            y, x = rng.integers(0, 16, 2)
            self.images[i, y : y + 18, x : x + 20] = 0
            self.images[i, y : y + 18, x : x + 20, c] = 255
            self.masks[i, y : y + 18, x : x + 20] = c + 1
            self.labels[i, c] = 1

    def load_image(self, sample_id: str) -> np.ndarray:
        return self.images[int(sample_id)]

    def load_label(self, sample_id: str) -> np.ndarray:
        return self.labels[int(sample_id)]

    def load_mask(self, sample_id: str) -> np.ndarray:
        return self.masks[int(sample_id)]


@MODELS.register("_test_pixel_classifier")
class PixelClassifier(nn.Module):
    """Per-pixel logits from a 1×1 convolution."""

    def __init__(self, num_classes: int, pretrained: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, num_classes, 1)

    def architecture(self) -> dict:
        return {"type": "_test_pixel_classifier", "num_classes": self.num_classes}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PixelAccuracy:
    """A validation hook: share of pixels whose argmax is the mask's class."""

    name, oracle = "pixel-accuracy", False

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    @torch.no_grad()
    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        hits = total = 0
        for sample_id in self.dataset.ids:
            image, mask = EvalTransform()(
                self.dataset.load_image(sample_id), self.dataset.load_mask(sample_id)
            )
            pred = model(image[None].to(device)).argmax(1)[0].cpu()
            hits += int((pred == mask.long()).sum())
            total += mask.numel()
        return {"val/pixel_acc": hits / total}


@TASKS.register("_test_segmentation")
class ToySegmentation(Task):
    """Cross-entropy on the (CutMix-pasted) masks of the training samples."""

    uses_masks = True

    def __init__(self, config, classes, args=None) -> None:
        super().__init__(config, classes, args)
        self.model = PixelClassifier(self.num_classes + 1)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def loss(self, phase: str, batch, ctx: StepContext) -> LossOutput:
        self.seen.append((batch.images.clone(), batch.masks.clone()))
        logits = self.net("model")(batch.images)
        return LossOutput(F.cross_entropy(logits, batch.masks.long(), ignore_index=255))

    def validation_hooks(self, dataset: SegmentationDataset, progress: bool = True) -> list:
        return [PixelAccuracy(dataset)]

    def export_meta(self) -> dict:
        return {"ignore_index": 255}


BASE = [
    "train.task=_test_segmentation",
    "data.crop_size=32",
    "data.resize_long=[36,44]",
    "train.epochs=1",
    "train.batch_size=4",
    "train.optimizer=sgd",
    "train.lr=0.5",
    "train.lr_multipliers=[1,1,1,1]",
    "train.device=cpu",
    "train.log_every=1",
    "train.augment.cutmix_alpha=1.0",
]


def test_a_segmentation_task_trains_on_masks_and_exports_through_the_registry(
    tmp_path: Path,
) -> None:
    config = load_config(None, BASE)
    assert resolve_task(config) is ToySegmentation
    trainer = Trainer(config, tmp_path, Squares(), val_dataset=Squares(4, seed=1), progress=False)
    before = trainer.task.model.conv.weight.detach().clone()
    metrics = trainer.fit()
    assert trainer.step == 2 and len(trainer.task.seen) == 2
    assert not torch.equal(trainer.task.model.conv.weight, before)
    assert set(metrics) == {"val/pixel_acc"}

    # The masks the loss saw are aligned with their (cropped, flipped, CutMix-pasted) images:
    # a pixel is marked class k exactly where channel k − 1 is saturated (borders aside).
    for images, masks in trainer.task.seen:
        assert masks.shape == (4, 32, 32) and masks.dtype == torch.uint8
        rgb = torch.stack([denormalize(im) for im in images])
        bright = rgb.argmax(1) + 1
        colour = rgb.max(1).values > 200
        labelled = (masks > 0) & (masks < 255)
        agree = (labelled == colour) & (~labelled | (bright == masks.long()))
        known = masks < 255
        assert agree[known].float().mean() > 0.97

    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2]
    meta = json.loads((tmp_path / "checkpoints/last.json").read_text())
    assert meta["task"] == "_test_segmentation" and meta["ignore_index"] == 255
    assert "strategy" not in meta and meta["classes"] == ["red", "green", "blue"]
    model, _ = load_model(tmp_path)
    assert isinstance(model, PixelClassifier)
    assert torch.equal(model.conv.weight, trainer.task.model.conv.weight)


def test_mixup_is_refused_for_a_task_that_trains_on_masks(tmp_path: Path) -> None:
    config = load_config(None, [*BASE, "train.augment.mixup_alpha=0.2"])
    with pytest.raises(ConfigError, match=r"train\.augment\.mixup_alpha=0\.2.*masks"):
        Trainer(config, tmp_path, Squares(), progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_cutmix_pastes_the_same_box_into_the_masks() -> None:
    # Image i and mask i are filled with i, so every pixel must keep image == mask.
    images = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 3, 20, 24).clone()
    masks = torch.arange(6, dtype=torch.uint8).view(6, 1, 1).expand(6, 20, 24).clone()
    labels = torch.eye(6)
    mix = BatchMix(cutmix_alpha=1.0)
    mixed, mixed_labels, mixed_masks = mix.mix(images, labels, np.random.default_rng(3), masks)
    assert torch.equal(mixed[:, 0].to(torch.uint8), mixed_masks)
    assert not torch.equal(mixed_masks, masks)  # something was pasted
    assert torch.equal(masks, torch.arange(6, dtype=torch.uint8).view(6, 1, 1).expand(6, 20, 24))
    # The same draws as without masks: images and labels are unchanged by passing masks.
    plain_images, plain_labels = mix(images, labels, np.random.default_rng(3))
    assert torch.equal(plain_images, mixed) and torch.equal(plain_labels, mixed_labels)


def test_mixup_cannot_mix_masks() -> None:
    images, labels = torch.zeros(4, 3, 8, 8), torch.eye(4)
    masks = torch.zeros(4, 8, 8, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="MixUp cannot blend hard masks"):
        BatchMix(mixup_alpha=1.0).mix(images, labels, np.random.default_rng(0), masks)
    # Without masks MixUp still works.
    out, _, none = BatchMix(mixup_alpha=1.0).mix(images, labels, np.random.default_rng(0))
    assert out.shape == images.shape and none is None


def test_unknown_task_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.task: unknown training task 'nope'"):
        Trainer(load_config(None, ["train.task=nope"]), tmp_path, Squares())
    assert not tmp_path.joinpath(".lock").exists()
