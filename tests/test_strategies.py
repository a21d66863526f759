"""Puzzle-CAM, OC-CSE, P-OC and P-NOC: tensor operations, losses by hand, gradients, training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wsss.config import load_config
from wsss.data.base import SegmentationDataset
from wsss.data.loader import Batch
from wsss.errors import ConfigError, DataError
from wsss.models import save_model
from wsss.models.classifier import CAMClassifier, CAMOutput
from wsss.train.engine import Trainer
from wsss.train.strategies import STRATEGIES, StepContext
from wsss.train.tasks.cam.functional import (
    hard_erase_keep,
    merge,
    reconstruction_loss,
    remove_class,
    sample_present_class,
    soft_erase_mask,
    tile,
)
from wsss.train.tasks.cam.occse import OCCSEArgs, class_specific_erasing
from wsss.train.tasks.cam.pnoc import PNOCArgs
from wsss.train.tasks.cam.puzzle import PuzzleArgs, puzzle_terms

CLASSES = ["a", "b", "c"]
TINY = [
    "model.backbone=resnet10t",
    "model.output_stride=8",
    "data.crop_size=32",
    "data.resize_long=[32,40]",
    "train.epochs=1",
    "train.batch_size=2",
    "train.device=cpu",
    "train.val_every=0",
    "train.log_every=1",
    "train.num_workers=0",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def oc_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (randomly initialised) vanilla classifier checkpoint standing in for a trained OC."""
    torch.manual_seed(123)
    model = CAMClassifier("resnet10t", num_classes=len(CLASSES), output_stride=8)
    stem = tmp_path_factory.mktemp("oc") / "last"
    return save_model(stem, model, {"classes": CLASSES})


def _ctx(step: int, total: int = 10) -> StepContext:
    return StepContext(step, total, 0, 0, 1, torch.device("cpu"))


def _batch(n: int = 2, size: int = 32, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])[:n]
    return Batch(
        torch.randn(n, 3, size, size, generator=g),
        labels,
        [str(i) for i in range(n)],
        torch.arange(n),
    )


def _strategy(name: str, oc_path: Path | None = None, **args):
    config = load_config(None, [*TINY, f"train.strategy={name}"])
    cls = STRATEGIES.get(name)
    if oc_path is not None:
        args["oc"] = str(oc_path)
    torch.manual_seed(0)
    return cls(config, CLASSES, cls.Args(**args))


# ---------------------------------------------------------------------------------- tiling


def test_tile_order_is_row_major_quarters_stacked_tile_major() -> None:
    x = torch.arange(2 * 1 * 4 * 6, dtype=torch.float32).reshape(2, 1, 4, 6)
    tiles = tile(x)
    assert tiles.shape == (8, 1, 2, 3)
    quarters = [
        (slice(0, 2), slice(0, 3)),
        (slice(0, 2), slice(3, 6)),
        (slice(2, 4), slice(0, 3)),
        (slice(2, 4), slice(3, 6)),
    ]  # TL, TR, BL, BR
    for q, (rows, cols) in enumerate(quarters):
        for b in range(2):
            assert torch.equal(tiles[q * 2 + b], x[b, :, rows, cols]), (q, b)


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (3, 2, 6, 8), (2, 5, 10, 4)])
def test_merge_inverts_tile(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    assert torch.equal(merge(tile(x)), x)
    t = torch.randn(4 * shape[0], *shape[1:])
    assert torch.equal(tile(merge(t)), t)


def test_tile_and_merge_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="even"):
        tile(torch.zeros(1, 3, 5, 4))
    with pytest.raises(ValueError, match="even"):
        tile(torch.zeros(1, 3, 4, 7))
    with pytest.raises(ValueError, match="4B"):
        merge(torch.zeros(6, 3, 2, 2))


def test_puzzle_needs_a_tileable_crop() -> None:
    config = load_config(None, [*TINY, "train.strategy=puzzle", "data.crop_size=33"])
    with pytest.raises(ConfigError, match="crop_size"):
        STRATEGIES.get("puzzle")(config, CLASSES, PuzzleArgs())
    # Even but not a multiple of 2 × stride: the merged maps would be larger than the image's.
    strategy = _strategy("puzzle")
    with pytest.raises(ConfigError, match="output stride"):
        strategy.loss("main", _batch(size=36), _ctx(0))


# ---------------------------------------------------------------------------------- ramps


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (PuzzleArgs().lambda_re, {0: 0.0, 25: 2.0, 50: 4.0, 100: 4.0}),
        (OCCSEArgs().lambda_cse, {0: 0.3, 50: 0.65, 100: 1.0}),
        (PNOCArgs().lambda_noc, {0: 0.0, 50: 0.5, 100: 1.0}),
    ],
    ids=["lambda_re", "lambda_cse", "lambda_noc"],
)
def test_default_ramps(spec: tuple[float, float, float], expected: dict[int, float]) -> None:
    for step, value in expected.items():
        assert _ctx(step, 100).ramp(*spec) == pytest.approx(value)


def test_bad_ramp_is_a_config_error(oc_path: Path) -> None:
    with pytest.raises(ConfigError, match="lambda_re"):
        _strategy("puzzle", lambda_re=(0.0, 4.0, 0.0))
    with pytest.raises(ConfigError, match="lambda_noc"):
        _strategy("pnoc", oc_path, lambda_noc=(0.0, 1.0, -1.0))


# ---------------------------------------------------------------------------------- losses


def test_reconstruction_loss_by_hand() -> None:
    maps = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])  # B=1, C=2, 1×2
    merged = torch.tensor([[[[0.0, 1.0]], [[-1.0, 5.0]]]])
    # Class 0: |1 − 0| + |−2 − 1| = 4; class 1: |3 + 1| + |0 − 5| = 9; 1·2·1·2 = 4 entries.
    assert reconstruction_loss(maps, merged, torch.tensor([[1.0, 0.0]])).item() == 4 / 4
    assert reconstruction_loss(maps, merged, torch.tensor([[1.0, 1.0]])).item() == 13 / 4
    assert reconstruction_loss(maps, merged, torch.tensor([[0.5, 0.0]])).item() == 2 / 4


class _CentredImage(nn.Module):
    """A 'network' whose maps are [x, 2x] minus their per-image mean (not tiling-invariant)."""

    def forward(self, x: torch.Tensor, with_maps: bool = False) -> CAMOutput:
        maps = torch.cat([x, 2 * x], dim=1)
        maps = maps - maps.mean(dim=(2, 3), keepdim=True)
        return CAMOutput(logits=maps.mean(dim=(2, 3)), maps=maps)


def test_puzzle_terms_by_hand() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])  # mean 3
    net = _CentredImage()
    maps = net(x).maps  # [[−2, −1], [0, 3]] and twice that
    labels = torch.tensor([[1.0, 0.0]])
    re_cls, re = puzzle_terms(net, x, maps, labels)
    # Each tile is one pixel, so its centred map is 0: A_re = 0 and |A − A_re| = |A|.
    assert re.item() == pytest.approx((2 + 1 + 0 + 3) / 8)
    # Logits GAP(A_re) = 0: BCE is log 2 whatever the target.
    assert re_cls.item() == pytest.approx(math.log(2))


def test_pointwise_network_reconstructs_exactly() -> None:
    net = nn.Conv2d(3, 4, 1, bias=False)

    class Pointwise(nn.Module):
        def forward(self, x, with_maps=False):
            maps = net(x)
            return CAMOutput(maps.mean(dim=(2, 3)), maps)

    x = torch.randn(2, 3, 8, 6)
    maps = Pointwise()(x).maps
    re_cls, re = puzzle_terms(Pointwise(), x, maps, torch.ones(2, 4), smoothing=0.1)
    assert re.item() == pytest.approx(0.0, abs=1e-6)
    expected = F.multilabel_soft_margin_loss(maps.mean(dim=(2, 3)), torch.full((2, 4), 0.95))
    assert re_cls.item() == pytest.approx(expected.item(), rel=1e-5)


def test_sample_present_class_is_uniform_over_present_classes() -> None:
    labels = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.3, 0.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_present_class(labels, g) for _ in range(3000)])
    counts = torch.bincount(draws[:, 0], minlength=4)
    assert counts[1] == 0 and counts.sum() == 3000
    assert all(abs(int(c) - 1000) < 120 for c in counts[[0, 2, 3]])
    assert (draws[:, 1] == -1).all()  # no present class
    assert (draws[:, 2] == 1).all()  # soft label counts as present
    removed = remove_class(labels, torch.tensor([2, -1, 1]))
    assert removed.tolist() == [[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert labels[0, 2] == 1  # not modified in place


def test_soft_mask_values_and_normalisation() -> None:
    maps = torch.zeros(2, 2, 2, 2)
    maps[0, 1] = torch.tensor([[4.0, -1.0], [2.0, 0.0]])
    maps[0, 0] = 100.0  # another class: never used for image 0
    maps[1, 0] = torch.tensor([[1.0, 2.0], [0.0, -3.0]])
    classes = torch.tensor([1, 0])
    batch = soft_erase_mask(maps, classes, (2, 2), "batch")
    image = soft_erase_mask(maps, classes, (2, 2), "image")
    peak = 4.0 + 1e-5
    torch.testing.assert_close(batch[0, 0], torch.tensor([[4.0, 0.0], [2.0, 0.0]]) / peak)
    torch.testing.assert_close(batch[1, 0], torch.tensor([[1.0, 2.0], [0.0, 0.0]]) / peak)
    torch.testing.assert_close(image[1, 0], torch.tensor([[1.0, 2.0], [0.0, 0.0]]) / (2 + 1e-5))
    torch.testing.assert_close(image[0], batch[0])  # image 0 holds the batch maximum
    for m in (batch, image):
        assert m.min() >= 0 and m.max() <= 1
    # Erases where the CAM is high: the peak pixel of each image becomes (almost) black.
    x = torch.ones(2, 3, 2, 2)
    erased = x * (1 - image)
    assert erased[0, :, 0, 0].abs().max() < 1e-4 and erased[1, :, 0, 1].abs().max() < 1e-4
    assert (erased[0, :, 0, 1] == 1).all()  # negative activation: kept
    # Nothing to erase for an image without a class.
    assert soft_erase_mask(maps, torch.tensor([-1, 0]), (2, 2))[0].abs().max() == 0


def test_soft_mask_upsamples_before_normalising_and_passes_gradients() -> None:
    maps = torch.randn(2, 3, 4, 4, requires_grad=True)
    classes = torch.tensor([2, 0])
    mask = soft_erase_mask(maps, classes, (16, 12), "image")
    assert mask.shape == (2, 1, 16, 12)
    up = F.interpolate(F.relu(maps[[0, 1], [2, 0]])[:, None], (16, 12), mode="bilinear")
    torch.testing.assert_close(mask, up / (up.amax(dim=(2, 3), keepdim=True) + 1e-5))
    mask.sum().backward()
    touched = maps.grad.abs().sum(dim=(2, 3)) > 0
    assert touched.tolist() == [[False, False, True], [True, False, False]]


def test_hard_mask_erases_above_threshold_only() -> None:
    maps = torch.zeros(3, 2, 2, 2)
    maps[0, 0] = torch.tensor([[0.0, 1.0], [2.0, 4.0]])  # ψ = 0, .25, .5, 1
    maps[1, 1] = torch.tensor([[-5.0, 10.0], [20.0, 40.0]])  # same ψ (per image), ReLU on −5
    maps[2] = 7.0
    keep = hard_erase_keep(maps, torch.tensor([0, 1, -1]), (2, 2), threshold=0.3)
    assert keep[0, 0].tolist() == [[1, 1], [0, 0]]
    assert keep[1, 0].tolist() == [[1, 1], [0, 0]]
    assert keep[2].min() == 1  # no class: nothing erased
    # Upsampled: erased pixels are exactly those whose ψ (upsampled, then normalised) exceeds δ.
    maps = torch.randn(2, 3, 4, 4)
    keep = hard_erase_keep(maps, torch.tensor([1, 2]), (8, 8), 0.2)
    up = F.interpolate(F.relu(maps[[0, 1], [1, 2]])[:, None], (8, 8), mode="bilinear")
    assert torch.equal(keep.bool(), up / (up.amax(dim=(2, 3), keepdim=True) + 1e-5) <= 0.2)
    assert 0 < keep.mean() < 1


def test_hard_mask_order_by_hand() -> None:
    # ReLU([-2, 1, 0]) = [0, 1, 0]; bilinear 1×3 → 1×6 (align_corners=False) samples it at
    # x = -0.25 (clamped), 0.25, 0.75, 1.25, 1.75, 2.25 (clamped): [0, .25, .75, .75, .25, 0].
    # The upsampled peak is 0.75, not 1, so the order of the normalisation matters.
    maps = torch.tensor([-2.0, 1.0, 0.0]).reshape(1, 1, 1, 3)
    classes = torch.tensor([0])
    # reference: upsample, then ψ = up / .75 = [0, 1/3, 1, 1, 1/3, 0]; ψ > 0.3 is erased
    keep = hard_erase_keep(maps, classes, (1, 6), 0.3)
    assert keep.flatten().tolist() == [1, 0, 0, 0, 0, 1]
    assert (
        keep.flatten().tolist()
        == hard_erase_keep(maps, classes, (1, 6), 0.3, "upsample_first").flatten().tolist()
    )
    # option: ψ = [0, 1, 0] / 1, then upsampled: [0, .25, .75, .75, .25, 0]
    keep = hard_erase_keep(maps, classes, (1, 6), 0.3, "normalize_first")
    assert keep.flatten().tolist() == [1, 1, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="order"):
        hard_erase_keep(maps, classes, (1, 6), 0.3, "sideways")


def test_pnoc_hard_mask_order_argument(oc_path: Path) -> None:
    batch = _batch(2)
    masks = {}
    for order in ("upsample_first", "normalize_first"):
        strategy = _strategy("pnoc", oc_path, hard_mask_order=order).train()
        maps = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        classes = torch.tensor([0, 1])
        strategy._erasing = (maps, classes)
        masks[order] = strategy.loss("noc", batch, _ctx(1)).logs["erased"]
        expected = 1 - hard_erase_keep(maps, classes, (32, 32), 0.2, order).mean()
        assert masks[order] == pytest.approx(expected.item())
    assert masks["upsample_first"] > masks["normalize_first"]  # the reference erases more
    with pytest.raises(ConfigError, match="hard_mask_order"):
        _strategy("pnoc", oc_path, hard_mask_order="sideways")


def test_class_specific_erasing_by_hand() -> None:
    images = torch.tensor([[[[2.0, 4.0]], [[1.0, 1.0]], [[0.0, 8.0]]]])  # B=1, 3×1×2
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    maps = torch.tensor([[[[0.0, 0.0]], [[1.0, 3.0]], [[0.0, 0.0]]]], requires_grad=True)
    loss, classes = class_specific_erasing(
        lambda x: x.mean(dim=(2, 3)),  # logits = per-channel mean of the erased image
        images,
        labels,
        maps,
        smoothing=0.1,
        classes=torch.tensor([1]),
    )
    m = torch.tensor([1.0, 3.0]) / (3 + 1e-5)
    logits = torch.tensor(
        [(2 * (1 - m[0]) + 4 * (1 - m[1])) / 2, (2 - m.sum()) / 2, 8 * (1 - m[1]) / 2]
    )
    target = torch.tensor([0.95, 0.05, 0.05])  # class 1 removed, then smoothed
    expected = -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits)).mean()
    assert classes.tolist() == [1]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert maps.grad[0, 1].abs().sum() > 0 and maps.grad[0, [0, 2]].abs().sum() == 0


# ---------------------------------------------------------------------------------- OC / NOC


def test_occse_oc_is_frozen_but_passes_gradients(oc_path: Path) -> None:
    strategy = _strategy("occse", oc_path).train()
    assert not strategy.oc.training and strategy.model.training
    assert all(not p.requires_grad for p in strategy.oc.parameters())
    assert list(strategy.state_modules()) == ["model"]
    batch = _batch()
    out = strategy.model(batch.images, with_maps=True)
    cse, _ = class_specific_erasing(
        lambda x: strategy.oc(x).logits, batch.images, batch.labels, out.maps
    )
    cse.backward()
    assert strategy.model.head.weight.grad.abs().sum() > 0  # through the OC and the mask
    assert all(p.grad is None for p in strategy.oc.parameters())


def test_ordinary_classifier_errors(oc_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"strategy_args\.oc"):
        _strategy("occse")
    with pytest.raises(DataError, match="not found"):
        _strategy("poc", tmp_path / "missing.safetensors")
    other = save_model(
        tmp_path / "other", CAMClassifier("resnet10t", 3, output_stride=8), {"classes": ["x"] * 3}
    )
    with pytest.raises(DataError, match="classes"):
        _strategy("pnoc", other)
    with pytest.raises(ConfigError, match="delta_noc"):
        _strategy("pnoc", oc_path, delta_noc=1.5)


def test_oc_and_noc_may_have_another_backbone_than_the_generator(tmp_path: Path) -> None:
    torch.manual_seed(1)
    other = CAMClassifier("resnet14t", num_classes=len(CLASSES), output_stride=16)
    path = save_model(tmp_path / "oc14", other, {"classes": CLASSES})
    strategy = _strategy("pnoc", path).train()
    assert strategy.model.backbone_name == "resnet10t"  # the generator follows the config
    assert strategy.noc.backbone_name == "resnet14t" and strategy.noc.output_stride == 16
    for name, p in other.state_dict().items():  # the NOC starts from the checkpoint's weights
        assert torch.equal(strategy.noc.state_dict()[name], p), name
    out = strategy.loss("generator", _batch(2), _ctx(0))
    assert torch.isfinite(out.loss)


def _generator_step(strategy, seed: int = 0):
    torch.manual_seed(seed)
    out = strategy.loss("generator", _batch(3), _ctx(3))
    out.loss.backward()
    return out


def test_noc_grad_reference_reaches_the_noc_and_isolated_does_not(oc_path: Path) -> None:
    ref = _strategy("pnoc", oc_path, noc_grad="reference").train()
    iso = _strategy("pnoc", oc_path, noc_grad="isolated").train()
    iso.load_state_dict(ref.state_dict())
    loss_ref = _generator_step(ref).loss
    loss_iso = _generator_step(iso).loss
    assert loss_ref.item() == pytest.approx(loss_iso.item(), rel=1e-6)
    assert all(p.grad is None for p in iso.noc.parameters())
    assert sum(p.grad.abs().sum() for p in ref.noc.parameters() if p.grad is not None) > 0
    # The generator's gradients are the same: only where the NOC's gradient goes differs.
    for (name, a), b in zip(ref.model.named_parameters(), iso.model.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_noc_keeps_bn_statistics_and_trains_on_hard_erased_images(oc_path: Path) -> None:
    strategy = _strategy("pnoc", oc_path).train()
    bns = [m for m in strategy.noc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns) and strategy.noc.head.training
    assert [(p.name, p.module, p.every, p.offset) for p in strategy.phases()] == [
        ("generator", "model", 1, 0),
        ("noc", "noc", 1, 0),
    ]
    stats = [m.running_mean.clone() for m in bns]
    torch.manual_seed(0)
    batch = _batch(3)
    strategy.loss("generator", batch, _ctx(5))
    out = strategy.loss("noc", batch, _ctx(5))
    out.loss.backward()
    assert out.logs["lambda_noc"] == pytest.approx(0.5)
    assert strategy.noc.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in strategy.model.parameters())  # maps were detached
    assert all(torch.equal(m.running_mean, s) for m, s in zip(bns, stats, strict=True))
    with pytest.raises(RuntimeError, match="generator phase"):
        strategy.loss("noc", batch, _ctx(5))


def test_noc_norm_layers_are_frozen_like_the_reference(oc_path: Path) -> None:
    strategy = _strategy("pnoc", oc_path)
    norms = [m for m in strategy.noc.modules() if isinstance(m, nn.BatchNorm2d)]
    frozen = {id(p) for m in norms for p in m.parameters()}
    assert norms and len(frozen) == 2 * len(norms)
    assert all(not p.requires_grad for m in norms for p in m.parameters())
    rest = [p for p in strategy.noc.parameters() if id(p) not in frozen]
    assert rest and all(p.requires_grad for p in rest)  # convolutions and head still train
    # The generator's norm layers train.
    assert all(p.requires_grad for p in strategy.model.parameters())
    # Option: the NOC's γ/β train (running statistics still frozen).
    trainable = _strategy("pnoc", oc_path, noc_norm_affine="trainable").train()
    assert all(p.requires_grad for p in trainable.noc.parameters())
    bns = [m for m in trainable.noc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not any(m.training for m in bns)
    with pytest.raises(ConfigError, match="noc_norm_affine"):
        _strategy("pnoc", oc_path, noc_norm_affine="loose")


@pytest.mark.parametrize(("schedule", "steps"), [("paper", [0, 3, 6]), ("code", [2, 5])])
def test_noc_schedule(schedule: str, steps: list[int]) -> None:
    from wsss.train.tasks.base import Phase

    offset = {"paper": 0, "code": 1}[schedule]
    phase = Phase("noc", "noc", every=3, offset=offset)
    assert [t for t in range(7) if phase.active(t)] == steps
    assert phase.num_steps(7) == len(steps)
    assert all(Phase("x", every=1, offset=offset).active(t) for t in range(7))
    assert Phase("x", every=1, offset=offset).num_steps(7) == 7


# ---------------------------------------------------------------------------------- training


class _Tiny(SegmentationDataset):
    def __init__(self, n: int = 4) -> None:
        rng = np.random.default_rng(0)
        self.root, self.split = Path("."), "train"
        self.classes = list(CLASSES)
        self.ids = [f"{i:03d}" for i in range(n)]
        self.labels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32)[:n]
        self.images = rng.integers(0, 256, (n, 36, 40, 3), dtype=np.uint8)

    def load_image(self, sample_id: str) -> np.ndarray:
        return self.images[int(sample_id)]

    def load_label(self, sample_id: str) -> np.ndarray:
        return self.labels[int(sample_id)]


def _trainer(tmp_path: Path, name: str, oc_path: Path, extra=(), resume=False) -> Trainer:
    overrides = [*TINY, f"train.strategy={name}", *extra]
    if name != "puzzle":
        overrides.append(f"train.strategy_args.oc={oc_path}")
    config = load_config(None, overrides)
    return Trainer(config, tmp_path / name, _Tiny(), resume=resume, progress=False)


@pytest.mark.parametrize("name", ["puzzle", "occse", "poc", "pnoc"])
def test_training_steps_change_the_weights(name: str, oc_path: Path, tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, name, oc_path, ["train.label_smoothing=0.1"])
    modules = trainer.strategy.state_modules()
    assert list(modules) == (["model", "noc"] if name == "pnoc" else ["model"])
    before = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in modules.items()}
    trainer.fit()
    assert trainer.step == 2
    for n, m in modules.items():
        after = m.state_dict()
        assert not torch.equal(after["head.weight"], before[n]["head.weight"]), n
        assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert (tmp_path / name / "checkpoints" / "last.safetensors").is_file()


@pytest.mark.parametrize(("schedule", "steps"), [("paper", [0, 3, 6]), ("code", [2, 5])])
def test_noc_steps_per_schedule_in_training(
    schedule: str, steps: list[int], oc_path: Path, tmp_path: Path
) -> None:
    extra = ["train.epochs=4", "train.strategy_args.k_noc=3"]  # 2 steps per epoch
    trainer = _trainer(
        tmp_path, "pnoc", oc_path, [*extra, f"train.strategy_args.noc_schedule={schedule}"]
    )
    stepped: list[int] = []
    trainer.optimizers["noc"].register_step_post_hook(lambda *_: stepped.append(trainer.step))
    trainer.fit(max_steps=7)
    assert trainer.step == 7 and stepped == steps


def test_noc_norm_parameters_stay_bit_identical_in_training(oc_path: Path, tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, "pnoc", oc_path)
    noc = trainer.strategy.noc
    norms = {
        f"{name}.{k}": p
        for name, m in noc.named_modules()
        if isinstance(m, nn.BatchNorm2d)
        for k, p in m.named_parameters()
    }
    before = {k: p.detach().clone() for k, p in norms.items()}
    head = noc.head.weight.detach().clone()
    trainer.fit(max_steps=1)
    assert norms and all(torch.equal(p, before[k]) for k, p in norms.items())
    assert not torch.equal(noc.head.weight, head)  # the NOC did step
    in_optimizer = {id(p) for g in trainer.optimizers["noc"].param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in norms.values()}


@pytest.mark.parametrize("option", ["weights", "biases"])
def test_norm_weight_group_setting_reaches_the_optimisers(
    option: str, oc_path: Path, tmp_path: Path
) -> None:
    trainer = _trainer(tmp_path, "pnoc", oc_path, [f"train.norm_weight_group={option}"])
    gamma = dict(trainer.strategy.model.backbone.named_parameters())["conv1.1.weight"]  # BN γ
    groups = {
        g["name"]: {id(p) for p in g["params"]}
        for g in trainer.optimizers["generator"].param_groups
    }
    assert id(gamma) in groups[f"pretrained_{option}"]
    with pytest.raises(ConfigError, match="norm_weight_group"):
        load_config(None, [*TINY, "train.norm_weight_group=norms"])


def test_pnoc_resume_equals_uninterrupted(oc_path: Path, tmp_path: Path) -> None:
    extra = ["train.accumulate=1", "train.checkpoint_every=1"]
    full = _trainer(tmp_path / "full", "pnoc", oc_path, extra)
    full.fit()
    first = _trainer(tmp_path / "split", "pnoc", oc_path, extra)
    first.fit(max_steps=1)
    second = _trainer(tmp_path / "split", "pnoc", oc_path, extra, resume=True)
    assert second.step == 1
    second.fit()
    for name in ("model", "noc"):
        a = getattr(full.strategy, name).state_dict()
        b = getattr(second.strategy, name).state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k}"


@pytest.mark.parametrize(
    ("preset", "strategy", "epsilon"),
    [
        ("voc12-puzzle", "puzzle", 0.0),
        ("voc12-occse", "occse", 0.0),
        ("voc12-poc", "poc", 0.1),
        ("voc12-pnoc", "pnoc", 0.1),
        ("synth-compare", "vanilla", 0.0),
    ],
)
def test_strategy_presets(preset: str, strategy: str, epsilon: float) -> None:
    from wsss.config import dataclass_from_dict

    config = load_config(preset)
    assert (config.train.strategy, config.train.label_smoothing) == (strategy, epsilon)
    assert config.data.crop_size % (2 * config.model.output_stride) == 0  # tileable
    # Arguments are valid for the strategy; the OC is never baked into a preset (--oc PATH).
    args = dataclass_from_dict(STRATEGIES.get(strategy).Args, config.train.strategy_args)
    assert getattr(args, "oc", None) is None
