"""The ``ccam`` and ``saliency_detector`` training tasks on tiny data.

Hints follow the image through resize, flip and crop (checked on images whose colour marks
the hint), the image augmentation is exactly the CAM task's, training runs a few steps with
finite losses, the direction is decided from the border prior (or anchored by hints), stored
in the checkpoint and its metadata, and reloaded by ``load_model``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.config import load_config
from wsss.data.base import SegmentationDataset
from wsss.data.transforms import TrainTransform, denormalize
from wsss.errors import ConfigError, DataError
from wsss.io.maps import ClassMaps, MapStore
from wsss.io.masks import MaskStore
from wsss.models import CCAM, load_model
from wsss.models.ccam import CCAMOutput, DirectionEstimate
from wsss.models.segmentation import DeepLabV3Plus
from wsss.train.engine import Trainer
from wsss.train.tasks import resolve_task
from wsss.train.tasks.saliency import CCAMTask, SaliencyDetectorTask
from wsss.train.tasks.saliency.data import HintCollate, HintDataset, HintTransform
from wsss.train.tasks.saliency.validation import SaliencyValidation, ccam_scores

pytestmark = pytest.mark.usefixtures("one_thread")


class Squares(SegmentationDataset):
    """Dark noise with one pure-colour rectangle per image; the mask marks its class."""

    def __init__(self, n: int = 8, seed: int = 0, size: tuple[int, int] = (40, 48)) -> None:
        rng = np.random.default_rng(seed)
        h, w = size
        self.root, self.split, self.classes = Path("."), "train", ["red", "green", "blue"]
        self.ids = [f"im{i}" for i in range(n)]
        self.images = rng.integers(0, 40, (n, h, w, 3), dtype=np.uint8)
        self.masks = np.zeros((n, h, w), np.uint8)
        self.labels = np.zeros((n, 3), np.float32)
        for i in range(n):
            c = i % 3
            y, x = rng.integers(2, h // 2), rng.integers(2, w // 2)
            self.images[i, y : y + h // 3, x : x + w // 3] = 0
            self.images[i, y : y + h // 3, x : x + w // 3, c] = 255
            self.masks[i, y : y + h // 3, x : x + w // 3] = c + 1
            self.labels[i, c] = 1

    def load_image(self, sample_id: str) -> np.ndarray:
        return self.images[self.ids.index(sample_id)]

    def load_label(self, sample_id: str) -> np.ndarray:
        return self.labels[self.ids.index(sample_id)]

    def load_mask(self, sample_id: str) -> np.ndarray:
        return self.masks[self.ids.index(sample_id)]


def write_hints(folder: Path, data: Squares, value: float = 0.9) -> MapStore:
    """Class maps equal to ``value`` on each image's rectangle (its class key), 0 elsewhere."""
    store = MapStore(folder)
    store.root.mkdir(parents=True, exist_ok=True)
    for sample_id in data.ids:
        mask = data.load_mask(sample_id)
        key = int(mask.max())
        hr = (mask == key).astype(np.float32)[None] * value
        store.save(sample_id, ClassMaps([key], hr[:, ::4, ::4], hr))
    return store


BASE = [
    "train.task=ccam",
    "model.backbone=resnet10t",
    "model.output_stride=8",
    "data.crop_size=48",
    "data.resize_long=[44,56]",
    "train.epochs=1",
    "train.batch_size=4",
    "train.optimizer=sgd",
    "train.lr=0.01",
    "train.momentum=0.9",
    "train.schedule=cosine",
    "train.device=cpu",
    "train.log_every=1",
    "train.strategy_args.direction_images=5",
]


# --------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize(
    "options",
    [{}, {"color_jitter": True}, {"randaugment": True, "hflip": False}],
)
def test_hint_transform_gives_the_cam_tasks_image_for_the_same_seed(options: dict) -> None:
    image = Squares(1).load_image("im0")
    hint = np.random.default_rng(0).random(image.shape[:2]).astype(np.float32)
    plain = TrainTransform(32, (30, 70), **options)
    carried = HintTransform(32, (30, 70), **options)
    for seed in range(6):
        expected, _ = plain(image, None, seed)
        got, got_hint = carried(image, hint, seed)
        assert torch.equal(got, expected)
        assert got_hint.shape == (32, 32) and got_hint.dtype == torch.float32
        same, none = carried(image, None, seed)
        assert torch.equal(same, expected) and none is None


def test_hint_follows_the_flip_by_hand() -> None:
    # 32×32 image, crop 32, long side 32: no resize, no crop; only the flip moves pixels.
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :8, 0] = 255  # red stripe on the left 8 columns
    hint = np.zeros((32, 32), np.float32)
    hint[:, :8] = 1.0
    transform = HintTransform(32, (32, 32))
    flips = set()
    for seed in range(8):
        img, hnt = transform(image, hint, seed)
        flipped = bool(hnt[:, -1].all())
        flips.add(flipped)
        cols = slice(24, 32) if flipped else slice(0, 8)
        expected = torch.zeros(32, 32)
        expected[:, cols] = 1.0
        torch.testing.assert_close(hnt, expected)
        assert (denormalize(img)[0] > 200).equal(expected.bool())
    assert flips == {True, False}  # both cases were seen


def test_hints_follow_resize_flip_and_crop() -> None:
    data = Squares(6, size=(40, 48))
    transform = HintTransform(32, (30, 64))
    for i, sample_id in enumerate(data.ids):
        image = data.load_image(sample_id)
        hint = (data.load_mask(sample_id) > 0).astype(np.float32)
        for seed in range(5):
            img, hnt = transform(image, hint, 100 * i + seed)
            level = denormalize(img).amax(0)  # 255 on the rectangle, < 40 on noise, 124 padding
            # Fully hinted pixels are the rectangle's colour, unhinted ones the dark noise;
            # only the resampled edge (partial coverage) is in between.
            assert (level[hnt >= 0.95] > 200).all()
            assert (level[hnt <= 0.05] <= 124).all()  # noise, or the padding (mean colour)
            assert ((hnt > 0.05) & (hnt < 0.95)).float().mean() < 0.1
            assert (hnt >= 0.95).any() == (level > 200).any()
            assert hnt.min() >= 0 and hnt.max() <= 1


def test_padding_is_no_hint() -> None:
    image = np.full((16, 16, 3), 200, np.uint8)
    hint = np.ones((16, 16), np.float32)
    img, hnt = HintTransform(32, (16, 16))(image, hint, 0)
    assert hnt.sum() == 16 * 16  # only the image's pixels are hints
    assert ((denormalize(img).amin(0) > 150) == (hnt > 0)).all()


def test_hint_dataset_reads_the_maximum_over_classes(tmp_path: Path) -> None:
    data = Squares(3)
    store = MapStore(tmp_path / "hints")
    store.root.mkdir()
    h, w = data.images.shape[1:3]
    hr = np.zeros((2, h, w), np.float32)
    hr[0, :10] = 0.3
    hr[1, 5:20] = 0.8
    for sample_id in data.ids:
        store.save(sample_id, ClassMaps([1, 3], hr[:, ::4, ::4], hr))
    samples = HintDataset(data, HintTransform(32, (32, 48)), tmp_path / "hints")
    expected = hr.max(0)
    np.testing.assert_array_equal(samples.load_hint("im1"), expected)
    batch = HintCollate()([samples[(0, 1)], samples[(1, 2)]])
    assert batch.images.shape == (2, 3, 32, 32) and batch.hints.shape == (2, 32, 32)
    _, direct = HintTransform(32, (32, 48))(data.load_image("im1"), expected, 2)
    assert torch.equal(batch.hints[1], direct)
    assert batch.ids == ["im0", "im1"] and batch.indices.tolist() == [0, 1]
    # A map of another size is refused with the file named.
    store.save("im2", ClassMaps([1], hr[:1, :, :-4][:, ::4, ::4], hr[:1, :, :-4]))
    with pytest.raises(DataError, match=r"im2\.npz: maps of size"):
        samples[(2, 0)]


# --------------------------------------------------------------------------- training


def test_ccam_trains_validates_and_exports_an_oriented_model(tmp_path: Path) -> None:
    config = load_config(None, BASE)
    assert resolve_task(config) is CCAMTask
    trainer = Trainer(config, tmp_path, Squares(8), val_dataset=Squares(3, seed=1), progress=False)
    assert isinstance(trainer.task.model, CCAM)
    before = trainer.task.model.head.weight.detach().clone()
    metrics = trainer.fit()
    assert trainer.step == 2
    assert not torch.equal(before, trainer.task.model.head.weight)
    assert set(metrics) == {"val/saliency_miou", "val/saliency_precision", "val/saliency_recall"}
    assert all(0 <= v <= 100 for v in metrics.values())
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert len(steps) == 2
    for line in steps:
        terms = line["positive_fg"] + line["positive_bg"] + line["negative"]
        assert np.isfinite(line["loss"]) and line["loss"] == pytest.approx(terms, rel=1e-5)
        assert "hint" not in line
    meta = json.loads((tmp_path / "checkpoints/last.json").read_text())
    d = meta["direction"]
    assert meta["task"] == "ccam" and meta["hints"] is None and meta["alpha"] == 0.25
    assert d["source"] == "border prior" and d["images"] == 5
    assert d["value"] == d["detected"] == (-1 if d["border"] > d["interior"] else 1)
    model, _ = load_model(tmp_path)
    assert isinstance(model, CCAM) and int(model.direction) == d["value"]


def test_an_inverted_partition_is_stored_and_reloaded(tmp_path: Path, monkeypatch) -> None:
    inverted = DirectionEstimate(-1, border=0.8, interior=0.2, images=5)
    monkeypatch.setattr(CCAMTask, "detect", lambda self, device: inverted)
    trainer = Trainer(load_config(None, BASE), tmp_path, Squares(8), progress=False)
    trainer.fit()
    meta = json.loads((tmp_path / "checkpoints/last.json").read_text())
    assert meta["direction"] == {
        "value": -1,
        "source": "border prior",
        "detected": -1,
        "border": 0.8,
        "interior": 0.2,
        "images": 5,
    }
    model, _ = load_model(tmp_path)
    assert int(model.direction) == -1
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model.saliency_logits(x), -model(x).logits)


def test_ccam_h_trains_with_hints_anchored_positive(tmp_path: Path, monkeypatch) -> None:
    data = Squares(8)
    write_hints(tmp_path / "hints", data)
    inverted = DirectionEstimate(-1, border=0.8, interior=0.2, images=5)
    monkeypatch.setattr(CCAMTask, "detect", lambda self, device: inverted)
    config = load_config(None, [*BASE, f"train.strategy_args.hints={tmp_path / 'hints'}"])
    trainer = Trainer(config, tmp_path / "run", data, progress=False)
    trainer.fit()
    lines = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    for line in steps:
        terms = line["positive_fg"] + line["positive_bg"] + line["negative"] + line["hint"]
        assert line["hint"] > 0 and line["loss"] == pytest.approx(terms, rel=1e-5)
    meta = json.loads((tmp_path / "run/checkpoints/last.json").read_text())
    assert meta["direction"]["value"] == 1 and meta["direction"]["source"] == "hints"
    assert meta["direction"]["detected"] == -1  # recorded as a check, not applied
    assert meta["hints"] == str(tmp_path / "hints")


def test_hint_weight_zero_leaves_the_contrastive_loss(tmp_path: Path) -> None:
    data = Squares(8)
    write_hints(tmp_path / "hints", data)
    losses = {}
    for weight in (0.0, 1.0):
        config = load_config(
            None,
            [
                *BASE,
                f"train.strategy_args.hints={tmp_path / 'hints'}",
                f"train.strategy_args.hint_weight={weight}",
                "train.strategy_args.direction=positive",
            ],
        )
        run = tmp_path / f"run{weight}"
        Trainer(config, run, data, progress=False).fit(max_steps=1)
        line = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        losses[weight] = line
    # Same first batch and weights: the first loss differs by exactly λ_h · hint.
    a, b = losses[0.0], losses[1.0]
    assert a["hint"] == pytest.approx(b["hint"])
    assert b["loss"] - a["loss"] == pytest.approx(b["hint"], rel=1e-4)


def test_missing_hint_maps_are_named(tmp_path: Path) -> None:
    data = Squares(8)
    store = write_hints(tmp_path / "hints", data)
    store.path("im3").unlink()
    config = load_config(None, [*BASE, f"train.strategy_args.hints={tmp_path / 'hints'}"])
    with pytest.raises(DataError, match=r"hints: no hint maps for 1 of the 8 .*im3"):
        Trainer(config, tmp_path / "run", data, progress=False)
    config = load_config(None, [*BASE, f"train.strategy_args.hints={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match=r"strategy_args\.hints: .*nope is not a folder"):
        Trainer(config, tmp_path / "run2", data, progress=False)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.augment.cutmix_alpha=1.0", r"does not mix images"),
        ("train.batch_size=1", r"batch_size must be at least 2"),
        ("train.strategy_args.alpha=0", r"alpha must be positive"),
        ("train.strategy_args.hint_bg=0.5", r"hint_bg <= hint_fg"),
        ("train.strategy_args.nope=1", r"unknown setting train\.strategy_args\.nope"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Trainer(load_config(None, [*BASE, override]), tmp_path, Squares(8), progress=False)


# --------------------------------------------------------------------------- direction


def test_detect_sees_an_inverted_map_on_square_resized_training_images() -> None:
    config = load_config(None, [*BASE, "train.strategy_args.direction_images=3"])
    task = CCAMTask(config, ["a", "b", "c"], CCAMTask.Args(direction_images=3))
    task.train_data(Squares(6, size=(40, 56)))
    seen = []

    def forward(x: torch.Tensor) -> CCAMOutput:
        # High probability on a 2-cell frame of a 14×14 grid, low inside: inverted.
        seen.append(x.shape)
        logits = torch.full((x.shape[0], 1, 14, 14), -3.0)
        logits[..., :2, :] = logits[..., -2:, :] = 3.0
        logits[..., :, :2] = logits[..., :, -2:] = 3.0
        return CCAMOutput(torch.zeros(x.shape[0], 4), torch.zeros(x.shape[0], 4), logits)

    task.model.forward = forward
    estimate = task.detect(torch.device("cpu"))
    assert seen == [(3, 3, 48, 48)]  # 3 images, each resized to the crop size as a square
    assert estimate.direction == -1 and estimate.images == 3
    # Default border: round(14 / 7) = 2 cells, exactly the frame: border mean σ(3).
    assert estimate.border == pytest.approx(float(torch.sigmoid(torch.tensor(3.0))))
    assert estimate.interior == pytest.approx(float(torch.sigmoid(torch.tensor(-3.0))))
    task.orient(torch.device("cpu"))
    assert int(task.model.direction) == -1 and task.direction_source == "border prior"
    # The images are a seeded choice of the split, the same for the same seed.
    assert task.direction_ids() == task.direction_ids()
    assert len(set(task.direction_ids())) == 3


# --------------------------------------------------------------------------- validation


class RectangleSaliency(torch.nn.Module):
    """Saliency logits = the brightest channel, positive only on the pure-colour rectangle."""

    direction = torch.ones(())

    def saliency_logits(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(1, keepdim=True)


class EverythingSalient(torch.nn.Module):
    def saliency_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x[:, :1])


def test_saliency_validation_by_hand() -> None:
    data = Squares(4, seed=3)
    perfect = SaliencyValidation(data, ccam_scores, progress=False)(
        RectangleSaliency(), torch.device("cpu")
    )
    assert perfect == {
        "val/saliency_miou": 100.0,
        "val/saliency_precision": 100.0,
        "val/saliency_recall": 100.0,
    }
    everything = SaliencyValidation(data, ccam_scores, progress=False)(
        EverythingSalient(), torch.device("cpu")
    )
    fg = sum(int((data.load_mask(i) > 0).sum()) for i in data.ids)
    total = data.masks.size
    assert everything["val/saliency_miou"] == pytest.approx(100 * (fg / total) / 2)
    assert everything["val/saliency_precision"] == pytest.approx(100 * fg / total)
    assert everything["val/saliency_recall"] == pytest.approx(100.0)


# --------------------------------------------------------------------------- detector

DETECTOR = [
    "train.task=saliency_detector",
    "model.backbone=resnet10t",
    "data.crop_size=32",
    "data.resize_long=[32,40]",
    "train.epochs=1",
    "train.batch_size=4",
    "train.optimizer=adamw",
    "train.lr=0.001",
    "train.device=cpu",
    "train.log_every=1",
]


def write_pseudo(folder: Path, data: Squares) -> MaskStore:
    store = MaskStore(folder)
    store.root.mkdir(parents=True, exist_ok=True)
    for sample_id in data.ids:
        store.save(sample_id, np.where(data.load_mask(sample_id) > 0, 255, 0).astype(np.uint8))
    return store


def test_saliency_detector_trains_on_pseudo_masks(tmp_path: Path) -> None:
    data = Squares(8)
    write_pseudo(tmp_path / "pseudo", data)
    config = load_config(None, [*DETECTOR, f"train.strategy_args.masks={tmp_path / 'pseudo'}"])
    assert resolve_task(config) is SaliencyDetectorTask
    trainer = Trainer(config, tmp_path / "run", data, val_dataset=Squares(2, 1), progress=False)
    seen = []
    loss = trainer.task.loss

    def spy(phase, batch, ctx):
        seen.append(batch)
        return loss(phase, batch, ctx)

    trainer.task.loss = spy
    metrics = trainer.fit()
    assert set(metrics) == {"val/saliency_miou", "val/saliency_precision", "val/saliency_recall"}
    for batch in seen:  # the PNGs' 255 arrives as class 1, crop padding as 255 (ignored)
        assert set(torch.unique(batch.masks).tolist()) <= {0, 1, 255}
        rgb = torch.stack([denormalize(im) for im in batch.images]).amax(1) > 200
        known = batch.masks != 255
        assert ((batch.masks == 1) == rgb)[known].float().mean() > 0.97
    lines = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(x["loss"]) for x in lines if "loss" in x)
    meta = json.loads((tmp_path / "run/checkpoints/last.json").read_text())
    assert meta["task"] == "saliency_detector" and meta["saliency"] == {"salient_class": 1}
    model, _ = load_model(tmp_path / "run")
    assert isinstance(model, DeepLabV3Plus) and model.num_classes == 2


def test_saliency_detector_refuses_bad_mask_folders(tmp_path: Path) -> None:
    data = Squares(8)
    with pytest.raises(ConfigError, match=r"strategy_args\.masks is not set"):
        Trainer(load_config(None, DETECTOR), tmp_path / "a", data, progress=False)
    store = write_pseudo(tmp_path / "pseudo", data)
    store.path("im5").unlink()
    config = load_config(None, [*DETECTOR, f"train.strategy_args.masks={tmp_path / 'pseudo'}"])
    with pytest.raises(DataError, match=r"no pseudo-saliency mask for 1 of the 8 .*im5"):
        Trainer(config, tmp_path / "b", data, progress=False)
    store.save("im5", data.load_mask("im5"))  # class ids, not 0/255
    trainer = Trainer(config, tmp_path / "c", data, progress=False)
    with pytest.raises(DataError, match=r"im5\.png: a pseudo-saliency mask holds only 0 and 255"):
        trainer.fit()
