"""Training transforms, batch mixing, the seeded sampler and the classification loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.data.base import SegmentationDataset
from wsss.data.loader import ClassificationDataset, Collate, SeededSampler, build_train_loader
from wsss.data.transforms import (
    BatchMix,
    EvalTransform,
    TrainTransform,
    denormalize,
    normalize,
    random_crop,
    to_tensor,
)
from wsss.errors import ConfigError


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_normalize_matches_imagenet_statistics_and_inverts() -> None:
    img = _image(5, 7)
    x = normalize(to_tensor(img))
    expected = (img[2, 3, 1] / 255 - 0.456) / 0.224
    assert x.dtype == torch.float32 and x.shape == (3, 5, 7)
    assert x[1, 2, 3].item() == pytest.approx(expected, abs=1e-6)
    assert torch.equal(denormalize(x), to_tensor(img))


def test_resize_long_side_then_pad_with_mean_colour_and_ignore() -> None:
    t = TrainTransform(crop_size=64, resize_long=(40, 40), hflip=False)
    img, mask = t(_image(30, 60), np.zeros((30, 60), np.uint8), seed=3)
    assert img.shape == (3, 64, 64) and mask.shape == (64, 64) and mask.dtype == torch.uint8
    content = mask != 255
    # Long side 60 → 40, short side 30 → 20: that many pixels are real, the rest padding.
    assert content.sum().item() == 40 * 20
    rows, cols = content.any(1).nonzero(), content.any(0).nonzero()
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (20, 40)
    assert torch.all(img[:, ~content] == 0)  # 0 after normalisation = the mean colour


def test_crop_of_a_larger_image_is_a_window_of_it() -> None:
    img = torch.arange(3 * 20 * 30, dtype=torch.float32).view(3, 20, 30)
    mask = torch.arange(20 * 30).view(1, 20, 30) % 7
    rng = np.random.default_rng(0)
    crop, mcrop = random_crop(img, mask, 16, rng)
    y, x = divmod(int(crop[0, 0, 0].item()), 30)
    assert torch.equal(crop, img[:, y : y + 16, x : x + 16])
    assert torch.equal(mcrop, mask[:, y : y + 16, x : x + 16])


def test_flip_happens_for_some_seeds_only() -> None:
    raw = _image(24, 24)
    t = TrainTransform(crop_size=24, resize_long=(24, 24), hflip=True)
    plain, flipped = normalize(to_tensor(raw)), normalize(to_tensor(raw[:, ::-1]))
    outcomes = set()
    for seed in range(16):
        out, _ = t(raw, seed=seed)
        assert torch.equal(out, plain) or torch.equal(out, flipped)
        outcomes.add(torch.equal(out, flipped))
    assert outcomes == {True, False}


def test_augmentation_is_a_function_of_the_seed_and_spares_the_global_rng() -> None:
    t = TrainTransform(32, (30, 50), randaugment=True, color_jitter=True)
    img = _image(40, 36)
    state = torch.get_rng_state()
    a, _ = t(img, seed=11)
    b, _ = t(img, seed=11)
    c, _ = t(img, seed=12)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_transform_settings() -> None:
    with pytest.raises(ConfigError, match="resize_long"):
        TrainTransform(32, (50, 40))
    with pytest.raises(ConfigError, match="crop_size"):
        TrainTransform(0, (40, 50))


def test_eval_transform_normalises_only() -> None:
    img = _image(13, 17)
    x, m = EvalTransform()(img, np.ones((13, 17), np.uint8))
    assert torch.equal(x, normalize(to_tensor(img))) and m.shape == (13, 17)


def _constant_batch(b: int = 6, size: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    # Image i is the constant i, its label the one-hot of class i.
    images = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, size, size)
    return images.clone(), torch.eye(b)


def test_cutmix_mixes_labels_by_pasted_area() -> None:
    images, labels = _constant_batch()
    before = (images.clone(), labels.clone())
    mixed, mixed_labels = BatchMix(cutmix_alpha=1.0)(images, labels, np.random.default_rng(4))
    assert torch.equal(images, before[0]) and torch.equal(labels, before[1])  # inputs untouched
    for i in range(6):
        own = (mixed[i] == i).float().mean().item()
        assert mixed_labels[i, i].item() == pytest.approx(own) or own == 1.0
        assert mixed_labels[i].sum().item() == pytest.approx(1.0)
        others = mixed[i][mixed[i] != i].unique()
        if len(others):
            j = int(others.item())
            assert mixed_labels[i, j].item() == pytest.approx(1 - own)


def test_mixup_blends_images_and_labels_with_one_weight() -> None:
    images, labels = _constant_batch()
    mixed, mixed_labels = BatchMix(mixup_alpha=0.4)(images, labels, np.random.default_rng(1))
    lam = mixed_labels.max(1).values  # weight of the dominant source per image
    for i in range(6):
        sources = mixed_labels[i].nonzero().flatten().tolist()
        value = sum(mixed_labels[i, j].item() * j for j in sources)
        assert torch.allclose(mixed[i], torch.full_like(mixed[i], value), atol=1e-5)
    assert torch.all(lam >= 0.5)


def test_batch_mix_disabled_returns_inputs() -> None:
    images, labels = _constant_batch()
    out = BatchMix()(images, labels, np.random.default_rng(0))
    assert out[0] is images and out[1] is labels


def test_sampler_orders_seeds_shards_and_skips() -> None:
    s = SeededSampler(10, seed=3)
    s.set_epoch(0)
    e0 = list(s)
    assert sorted(i for i, _ in e0) == list(range(10))
    assert list(s) == e0  # same epoch, same order and seeds
    s.set_epoch(1)
    e1 = list(s)
    assert [i for i, _ in e1] != [i for i, _ in e0]
    s.set_epoch(0, skip=4)
    assert list(s) == e0[4:] and len(s) == 6

    shards = []
    for rank in range(3):
        r = SeededSampler(10, seed=3, rank=rank, world_size=3)
        r.set_epoch(0)
        shards.append(list(r))
    assert all(len(sh) == 4 for sh in shards)  # padded to 12
    interleaved = [shards[k % 3][k // 3] for k in range(12)]
    assert interleaved[:10] == e0 and interleaved[10:] == e0[:2]  # rank r takes every 3rd


class _Tiny(SegmentationDataset):
    def __init__(self) -> None:
        self.root, self.split, self.classes = Path("."), "train", ["a", "b", "c"]
        self.ids = [str(i) for i in range(6)]
        self.labels = np.eye(3, dtype=np.float32)[np.arange(6) % 3]

    def load_image(self, sample_id: str) -> np.ndarray:
        return _image(20 + int(sample_id), 30, seed=int(sample_id))

    def load_label(self, sample_id: str) -> np.ndarray:
        return self.labels[int(sample_id)]


def test_loader_batches_are_reproducible_and_labels_are_copies() -> None:
    data = _Tiny()
    ds = ClassificationDataset(data, TrainTransform(16, (16, 24)))
    sampler = SeededSampler(len(ds), seed=5)
    loader = build_train_loader(ds, sampler, batch_size=4, mix=BatchMix(cutmix_alpha=1.0))
    first = list(loader)
    assert len(first) == 1  # drop_last
    batch = first[0]
    assert batch.images.shape == (4, 3, 16, 16) and batch.labels.shape == (4, 3)
    second = next(iter(loader))
    assert torch.equal(batch.images, second.images) and torch.equal(batch.labels, second.labels)
    batch.labels.add_(100)
    assert data.labels.max() == 1.0
    single = Collate()([ds[0], ds[1]])
    assert single.ids == ["0", "1"] and single.masks is None
