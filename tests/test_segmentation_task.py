"""The ``segmentation`` task: masks from a folder, aligned augmentation, ignore, val mIoU."""

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
from wsss.data.loader import Batch
from wsss.data.transforms import denormalize, normalize
from wsss.errors import ConfigError, DataError
from wsss.io.masks import MaskStore
from wsss.models import load_model
from wsss.models.segmentation import DeepLabV3Plus
from wsss.train.engine import Trainer
from wsss.train.tasks import SegmentationTask, StepContext, resolve_task
from wsss.train.tasks.segmentation import PseudoMaskDataset, SegmentationValidation

pytestmark = pytest.mark.usefixtures("one_thread")


class Squares(SegmentationDataset):
    """Dark noise with one pure-colour square per image; its mask marks the square's class."""

    def __init__(self, n: int = 4, seed: int = 0, size: tuple[int, int] = (36, 40)) -> None:
        rng = np.random.default_rng(seed)
        h, w = size
        self.root, self.split, self.classes = Path("."), "train", ["red", "green", "blue"]
        self.ids = [f"im{i}" for i in range(n)]
        self.images = rng.integers(0, 40, (n, h, w, 3), dtype=np.uint8)
        self.masks = np.zeros((n, h, w), np.uint8)
        self.labels = np.zeros((n, 3), np.float32)
        for i in range(n):
            c = i % 3
            y, x = rng.integers(0, h // 2, 2)
            self.images[i, y : y + h // 2, x : x + w // 2] = 0
            self.images[i, y : y + h // 2, x : x + w // 2, c] = 255
            self.masks[i, y : y + h // 2, x : x + w // 2] = c + 1
            self.labels[i, c] = 1

    def load_image(self, sample_id: str) -> np.ndarray:
        return self.images[self.ids.index(sample_id)]

    def load_label(self, sample_id: str) -> np.ndarray:
        return self.labels[self.ids.index(sample_id)]

    def load_mask(self, sample_id: str) -> np.ndarray:
        return self.masks[self.ids.index(sample_id)]


class Coordinates(Squares):
    """One 20×30 image whose red channel is 8·column and green 8·row; mask = (row + col) % 5."""

    def __init__(self) -> None:
        super().__init__(1)
        rows, cols = np.mgrid[0:20, 0:30]
        self.images = np.stack([8 * cols, 8 * rows, np.full_like(rows, 200)], -1)[None]
        self.images = self.images.astype(np.uint8)
        self.masks = ((rows + cols) % 5).astype(np.uint8)[None]


def _write_masks(folder: Path, dataset: Squares) -> MaskStore:
    store = MaskStore(folder)
    for i, sample_id in enumerate(dataset.ids):
        store.save(sample_id, dataset.masks[i])
    return store


def _config(*extra: str):
    return load_config(
        None,
        [
            "train.task=segmentation",
            "model.backbone=resnet10t",
            "data.crop_size=32",
            "data.resize_long=[36,44]",
            "train.epochs=1",
            "train.batch_size=2",
            "train.lr=0.007",
            "train.momentum=0.9",
            "train.nesterov=true",
            "train.weight_decay=0.00004",
            "train.device=cpu",
            "train.log_every=1",
            *extra,
        ],
    )


def test_trains_on_a_mask_folder_validates_and_exports(tmp_path: Path) -> None:
    data = Squares(4)
    # The folder's masks differ from the ground truth, so we can tell which ones were used.
    pseudo = Squares(4)
    pseudo.masks[:, :, :20] = 255
    _write_masks(tmp_path / "masks", pseudo)
    config = _config(f"train.strategy_args.masks={tmp_path / 'masks'}")
    assert resolve_task(config) is SegmentationTask
    trainer = Trainer(config, tmp_path / "run", data, val_dataset=Squares(2, 1), progress=False)
    seen = []
    loss = trainer.task.loss

    def recording_loss(phase, batch, ctx):
        seen.append(batch.masks.clone())
        return loss(phase, batch, ctx)

    trainer.task.loss = recording_loss
    before = [p.detach().clone() for p in trainer.task.model.parameters()]
    metrics = trainer.fit()
    assert trainer.step == 2 and len(seen) == 2
    assert any(
        not torch.equal(a, b) for a, b in zip(before, trainer.task.model.parameters(), strict=True)
    )
    # The left 20 columns are 255 in the folder's masks: each crop of the 36–44-px resized
    # image holds ignored pixels, which the ground truth never has.
    assert all((m == 255).any() for m in seen)
    # Nesterov SGD, momentum 0.9, and the head at 10×/20× the encoder's lr.
    groups = trainer.optimizers["main"].param_groups
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in groups)
    lrs = {g["name"]: g["initial_lr"] for g in groups}
    assert lrs["new_weights"] == pytest.approx(10 * lrs["pretrained_weights"]) == 0.07
    assert lrs["new_biases"] == pytest.approx(20 * 0.007)
    assert set(metrics) == {"val/miou", "val/loss"} and 0 <= metrics["val/miou"] <= 100

    meta = json.loads((tmp_path / "run/checkpoints/last.json").read_text())
    assert meta["task"] == "segmentation" and meta["masks"] == str(tmp_path / "masks")
    assert meta["ignore_index"] == 255 and meta["classes"] == ["red", "green", "blue"]
    model, _ = load_model(tmp_path / "run")
    assert isinstance(model, DeepLabV3Plus) and model.num_classes == 4
    assert torch.equal(model.head.weight, trainer.task.model.head.weight)


def test_masks_follow_resize_flip_and_crop_pixel_for_pixel(tmp_path: Path) -> None:
    # No resize (the long side stays 30): every image pixel keeps its own mask value, so the
    # coordinates read back from the image's colours predict the mask exactly; the 4 rows of
    # padding (crop 24 > height 20) are 255 in the mask.
    data = Coordinates()
    _write_masks(tmp_path / "m", data)
    config = _config(
        f"train.strategy_args.masks={tmp_path / 'm'}",
        "data.crop_size=24",
        "data.resize_long=[30,30]",
    )
    task = SegmentationTask(
        config, data.classes, resolve_task(config).Args(masks=str(tmp_path / "m"))
    )
    samples = task.train_data(data)
    flipped = 0
    for seed in range(12):
        item = samples[(0, seed)]
        image, mask = denormalize(item["image"]).long(), item["mask"].long()
        assert mask.shape == (24, 24) and item["mask"].dtype == torch.uint8
        padded = mask == 255
        assert int(padded.sum()) == 4 * 24  # four full rows
        cols, rows = image[0] // 8, image[1] // 8
        assert torch.equal(mask[~padded], ((rows + cols) % 5)[~padded])
        # Images are padded with 0 after normalisation: the mean colour.
        assert (image[2][padded] == round(0.406 * 255)).all() and (image[2][~padded] == 200).all()
        flipped += int(cols[~padded].view(20, 24)[0, 0] > cols[~padded].view(20, 24)[0, -1])
    assert 0 < flipped < 12  # both orientations were drawn

    # With a resize (×1.5 and ×0.8; bicubic image, nearest mask) the colours, rounded to the
    # nearest coordinates, still predict the mask almost everywhere: the two grids are aligned.
    for long_side in (45, 24):
        config = _config(
            f"train.strategy_args.masks={tmp_path / 'm'}",
            "data.crop_size=24",
            f"data.resize_long=[{long_side},{long_side}]",
        )
        samples = SegmentationTask(config, data.classes, task.args).train_data(data)
        for seed in range(3):
            item = samples[(0, seed)]
            image, mask = denormalize(item["image"]).long(), item["mask"].long()
            cols, rows = (image[0] + 4) // 8, (image[1] + 4) // 8
            known = mask != 255
            assert ((rows + cols) % 5 == mask)[known].float().mean() > 0.9
            assert (mask[known] < 5).all()  # nearest neighbours: no new label values


def test_ignored_pixels_cost_nothing_and_label_smoothing_is_applied() -> None:
    config = _config("train.label_smoothing=0.1")
    task = SegmentationTask(config, ["a", "b"], resolve_task(config).Args())
    logits = torch.randn(1, 3, 4, 5)

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return logits

    task.model = Fixed()
    masks = torch.full((1, 4, 5), 255, dtype=torch.uint8)
    masks[0, 1, 2], masks[0, 3, 4] = 2, 0
    batch = Batch(torch.zeros(1, 3, 4, 5), torch.zeros(1, 2), ["x"], torch.zeros(1), masks)
    ctx = StepContext(0, 1, 0, 0, 1, torch.device("cpu"))
    loss = task.loss("main", batch, ctx).loss
    # By hand: two labelled pixels, (1−ε)·(−log p_y) + ε·mean_k(−log p_k), averaged.
    logp = F.log_softmax(logits[0], dim=0)
    expected = 0.0
    for (y, x), target in (((1, 2), 2), ((3, 4), 0)):
        expected += 0.9 * -logp[target, y, x] + 0.1 * -logp[:, y, x].mean()
    torch.testing.assert_close(loss, expected / 2)


def test_missing_or_misshapen_masks_are_named(tmp_path: Path) -> None:
    data = Squares(7)
    store = _write_masks(tmp_path / "m", data)
    for sample_id in data.ids[:6]:
        store.path(sample_id).unlink()
    with pytest.raises(DataError, match=r"no mask for 6 of the 7 images .*'im0'.* and 1 more"):
        PseudoMaskDataset(data, tmp_path / "m")

    store = _write_masks(tmp_path / "m2", data)
    store.save("im3", np.zeros((10, 12), np.uint8))
    config = _config(f"train.strategy_args.masks={tmp_path / 'm2'}")
    task = SegmentationTask(config, data.classes, resolve_task(config).Args(masks=str(store.root)))
    samples = task.train_data(data)
    samples[(2, 0)]  # a good one loads
    with pytest.raises(DataError, match=r"im3\.png: mask is 10×12 but image 'im3' is 36×40"):
        samples[(3, 0)]


def test_validation_miou_by_hand() -> None:
    # A "network" that reads the class from the image: 1 where red is bright, else 0. On the
    # squares it is right for red squares and calls green/blue squares background.
    class RedDetector(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            red = (x[:, 0] > 1.0).float()
            out = torch.zeros(x.shape[0], 4, *x.shape[-2:])
            out[:, 1], out[:, 0] = red, 1 - red
            return out

    data = Squares(2, size=(8, 10))  # image 0: red square, image 1: green square (4×5 each)
    metrics = SegmentationValidation(data, progress=False)(RedDetector().eval(), "cpu")
    # Per class over both images, bg: T = 60 + 60 = 120, P = 60 + 80 = 140, TP = 120 → IoU 120/140.
    # red: T = P = TP = 20 → 1. green: T 20, P 0 → 0. blue: absent everywhere → left out.
    assert metrics["val/miou"] == pytest.approx(100 * (120 / 140 + 1 + 0) / 3)
    logits = RedDetector()(
        torch.stack([normalize(torch.from_numpy(im).permute(2, 0, 1)) for im in data.images])
    )
    expected = F.cross_entropy(logits, torch.from_numpy(data.masks).long())
    assert metrics["val/loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_bad_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.num_classes=5 but the dataset has 3"):
        Trainer(_config("model.num_classes=5"), tmp_path / "a", Squares(), progress=False)
    config = _config("train.strategy_args.model_options={output_stride: 8}")
    with pytest.raises(ConfigError, match=r"model_options cannot set \['output_stride'\]"):
        Trainer(config, tmp_path / "b", Squares(), progress=False)
    with pytest.raises(ConfigError, match="architecture"):
        Trainer(
            _config("train.strategy_args.architecture=unet"),
            tmp_path / "c",
            Squares(),
            progress=False,
        )
    with pytest.raises(ConfigError, match="mixup_alpha"):
        Trainer(_config("train.augment.mixup_alpha=1.0"), tmp_path / "d", Squares(), progress=False)
