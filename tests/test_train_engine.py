"""The training engine: resume, accumulation, multi-phase strategies, checkpoints, run dirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from wsss.config import Config, load_config
from wsss.data.base import SegmentationDataset
from wsss.errors import ConfigError, DataError
from wsss.models import CAMClassifier, load_model, save_model
from wsss.models.classifier import CAMOutput
from wsss.train.engine import Trainer
from wsss.train.strategies import STRATEGIES, LossOutput, Phase, StepContext, Strategy
from wsss.train.validation import ClassificationValidation, average_precision, f1_scores

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(SegmentationDataset):
    """Random images with a bright square per present class."""

    def __init__(self, n: int = 16, num_classes: int = 3, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.root, self.split = Path("."), "train"
        self.classes = [f"c{i}" for i in range(num_classes)]
        self.ids = [f"{i:03d}" for i in range(n)]
        self.labels = (rng.random((n, num_classes)) < 0.5).astype(np.float32)
        self.images = rng.integers(0, 60, (n, 36, 44, 3), dtype=np.uint8)
        for i in range(n):
            for c in np.flatnonzero(self.labels[i]):
                y, x = rng.integers(0, 24, 2)
                self.images[i, y : y + 12, x : x + 12, c] = 255

    def load_image(self, sample_id: str) -> np.ndarray:
        return self.images[int(sample_id)]

    def load_label(self, sample_id: str) -> np.ndarray:
        return self.labels[int(sample_id)]


BASE = [
    "model.backbone=resnet10t",
    "data.crop_size=32",
    "data.resize_long=[32,44]",
    "train.epochs=2",
    "train.batch_size=4",
    "train.lr=0.01",
    "train.log_every=1",
]


def _config(*overrides: str) -> Config:
    return load_config(None, [*BASE, *overrides])


def _weights(run: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"{name}.safetensors")


def test_interrupted_then_resumed_run_is_bit_identical(tmp_path: Path) -> None:
    config = _config(
        "train.accumulate=2",
        "train.momentum=0.9",
        "train.augment.randaugment=true",
        "train.augment.cutmix_alpha=1.0",
        "train.label_smoothing=0.1",
    )
    Trainer(config, tmp_path / "a", Tiny(), progress=False).fit()
    stopped = Trainer(config, tmp_path / "b", Tiny(), progress=False)
    assert stopped.total_steps == 4
    stopped.fit(max_steps=1)  # interrupted inside the first epoch
    assert json.loads((tmp_path / "b/checkpoints/state.json").read_text())["step"] == 1
    Trainer(config, tmp_path / "b", Tiny(), resume=True, progress=False).fit()
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The resumed run's log is the uninterrupted one's (lines after the stop are not repeated).
    log_a = (tmp_path / "a/metrics.jsonl").read_text().splitlines()
    log_b = (tmp_path / "b/metrics.jsonl").read_text().splitlines()
    assert log_a == log_b


def test_run_directory_checkpoints_and_validation(tmp_path: Path) -> None:
    config = _config("train.select_by=val/f1", "train.epochs=2")
    hook = ClassificationValidation(Tiny(8, seed=1), size=32, batch_size=4, progress=False)
    trainer = Trainer(config, tmp_path, Tiny(), [hook], progress=False)
    metrics = trainer.fit()
    assert set(metrics) == {"val/loss", "val/map", "val/f1", "val/f1_micro"}
    assert load_config(tmp_path / "config.yaml") == config
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert [x["step"] for x in steps] == list(range(1, 9))
    # Poly decay per optimiser step: the lr used by step k is lr·(1 − k/K)^0.9, K = 8.
    assert [x["lr"] for x in steps] == pytest.approx([0.01 * (1 - k / 8) ** 0.9 for k in range(8)])
    assert sum("val/f1" in x for x in lines) == 2
    meta = json.loads((tmp_path / "checkpoints/last.json").read_text())
    assert meta["classes"] == ["c0", "c1", "c2"] and meta["step"] == 8 and meta["epoch"] == 2
    assert meta["architecture"]["backbone"] == "resnet10t" and meta["metrics"] == metrics
    best = json.loads((tmp_path / "checkpoints/best.json").read_text())
    assert best["selected_by"] == "val/f1" and best["oracle"] is False
    assert best["metrics"]["val/f1"] == max(x["val/f1"] for x in lines if "val/f1" in x)

    model, loaded_meta = load_model(tmp_path)
    assert loaded_meta["classes"] == meta["classes"] and not model.training
    x = torch.randn(2, 3, 32, 32)
    trainer.strategy.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, trainer.strategy.model(x).logits)


def test_existing_runs_are_not_overwritten_and_resume_checks_config(tmp_path: Path) -> None:
    config = _config("train.epochs=1")
    with pytest.raises(ConfigError, match="nothing to resume"):
        Trainer(config, tmp_path, Tiny(), resume=True, progress=False)
    Trainer(config, tmp_path, Tiny(), progress=False).fit()
    with pytest.raises(ConfigError, match="already holds a training run"):
        Trainer(config, tmp_path, Tiny(), progress=False)
    with pytest.raises(ConfigError, match=r"configuration changed \(train\.lr"):
        Trainer(_config("train.epochs=1", "train.lr=0.5"), tmp_path, Tiny(), resume=True)
    # Settings that cannot change the result may differ.
    Trainer(_config("train.epochs=1", "train.log_every=3"), tmp_path, Tiny(), resume=True)
    states = sorted(p.name for p in (tmp_path / "checkpoints").glob("state-*.safetensors"))
    assert states == ["state-00000004.safetensors"]  # older states are removed


def test_bad_strategy_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown training strategy 'nope'"):
        Trainer(_config("train.strategy=nope"), tmp_path, Tiny())
    with pytest.raises(ConfigError, match=r"unknown setting train\.strategy_args\.alpha"):
        Trainer(_config("train.strategy_args.alpha=1"), tmp_path, Tiny())
    with pytest.raises(ConfigError, match="no full optimiser step"):
        Trainer(_config("train.batch_size=32"), tmp_path, Tiny())
    with pytest.raises(ConfigError, match=r"model\.num_classes=5"):
        Trainer(_config("model.num_classes=5"), tmp_path, Tiny())


# ----------------------------------------------------------------------------- toy strategies


class ToyCAM(nn.Module):
    """A BatchNorm-free CAM model: 1×1 convolution, GAP."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> CAMOutput:
        maps = self.head(x)
        return CAMOutput(logits=maps.mean(dim=(2, 3)), maps=maps)


@STRATEGIES.register("_test_toy")
class ToyStrategy(Strategy):
    def __init__(self, config, classes, args=None) -> None:
        super().__init__(config, classes, args)
        self.model = ToyCAM(self.num_classes)

    def loss(self, phase: str, batch, ctx: StepContext) -> LossOutput:
        return LossOutput(
            self.classification_loss(self.net("model")(batch.images).logits, batch.labels)
        )


def _toy_delta(tmp_path: Path, name: str, *overrides: str) -> torch.Tensor:
    config = _config(
        "train.strategy=_test_toy",
        "train.epochs=1",
        "train.lr=1.0",
        "train.weight_decay=0",
        "train.augment.hflip=false",
        *overrides,
    )
    trainer = Trainer(config, tmp_path / name, Tiny(n=4), progress=False)
    before = trainer.strategy.model.head.weight.detach().clone()
    trainer.fit()
    assert trainer.step == 1
    return trainer.strategy.model.head.weight.detach() - before


def test_accumulation_mean_equals_one_big_batch_and_sum_doubles_it(tmp_path: Path) -> None:
    big = _toy_delta(tmp_path, "big", "train.batch_size=4", "train.accumulate=1")
    mean = _toy_delta(tmp_path, "mean", "train.batch_size=2", "train.accumulate=2")
    summed = _toy_delta(
        tmp_path, "sum", "train.batch_size=2", "train.accumulate=2", "train.accumulate_mode=sum"
    )
    assert big.abs().max() > 0
    torch.testing.assert_close(mean, big, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(summed, 2 * big, rtol=1e-5, atol=1e-7)


@STRATEGIES.register("_test_two_phase")
class TwoPhase(Strategy):
    """Phase ``main`` also back-propagates into ``aux``; ``aux`` steps every other step."""

    def __init__(self, config, classes, args=None) -> None:
        super().__init__(config, classes, args)
        self.model = ToyCAM(self.num_classes)
        self.aux = ToyCAM(self.num_classes)
        self.record: list[dict] = []

    def phases(self) -> list[Phase]:
        return [Phase("main", "model"), Phase("aux", "aux", lr_scale=0.5, every=2)]

    def loss(self, phase: str, batch, ctx: StepContext) -> LossOutput:
        if phase == "main":
            z = self.net("model")(batch.images).logits + self.net("aux")(batch.images).logits
            return LossOutput(
                self.classification_loss(z, batch.labels), {"ramp": ctx.ramp(0, 4, 0.5)}
            )
        return LossOutput(
            self.classification_loss(self.net("aux")(batch.images).logits, batch.labels)
        )

    def after_step(self, ctx: StepContext) -> None:
        self.record.append(
            {
                "step": ctx.step,
                "aux": self.aux.head.weight.detach().clone(),
                "grad": self.aux.head.weight.grad,
            }
        )


def test_multi_phase_contract(tmp_path: Path) -> None:
    config = _config("train.strategy=_test_two_phase", "train.epochs=1", "train.batch_size=2")
    trainer = Trainer(config, tmp_path, Tiny(n=8), progress=False)
    start = trainer.strategy.aux.head.weight.detach().clone()
    trainer.fit()
    rec = trainer.strategy.record
    assert [r["step"] for r in rec] == [0, 1, 2, 3]
    # aux steps at t = 0, 2 only; its gradients from the main phase survive until it steps.
    assert not torch.equal(rec[0]["aux"], start) and rec[0]["grad"] is None
    assert torch.equal(rec[1]["aux"], rec[0]["aux"]) and rec[1]["grad"] is not None
    assert not torch.equal(rec[2]["aux"], rec[1]["aux"]) and rec[2]["grad"] is None
    # Own optimiser, lr × lr_scale, schedule over its ceil(T / every) = 2 steps.
    assert trainer.optimizers["aux"].param_groups[0]["initial_lr"] == pytest.approx(0.005)
    assert trainer.schedulers["aux"].last_epoch == 2
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["main/ramp"] for x in lines] == pytest.approx([0, 2, 4, 4])  # ramp(0, 4, 0.5), T = 4
    assert "aux/loss" in lines[0] and "aux/loss" not in lines[1] and "lr/aux" in lines[0]
    # Both trained modules are in the resumable state.
    state = load_file(next((tmp_path / "checkpoints").glob("state-*.safetensors")))
    assert "module/aux/head.weight" in state and "module/model/head.weight" in state


class _OracleHook:
    """Pretends to score seeds on training ground truth: its metric may pick checkpoints."""

    name, oracle = "seed-miou", True

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        self.calls += 1
        assert not model.training
        return {"seed/miou": [0.3, 0.5, 0.4][self.calls - 1]}


def test_checkpoint_selected_by_an_oracle_metric_is_labelled(tmp_path: Path) -> None:
    config = _config(
        "train.strategy=_test_toy", "train.epochs=3", "train.select_by=seed/miou", "train.lr=0.1"
    )
    hook = _OracleHook()
    trainer = Trainer(config, tmp_path, Tiny(n=8), [hook], progress=False)
    trainer.fit()
    assert hook.calls == 3
    best = json.loads((tmp_path / "checkpoints/best.json").read_text())
    assert best["oracle"] is True and best["selected_by"] == "seed/miou"
    assert best["step"] == 4 and best["metrics"] == {"seed/miou": 0.5}  # epoch 2 of 3
    assert json.loads((tmp_path / "checkpoints/last.json").read_text())["step"] == 6


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_foreign_files(tmp_path: Path) -> None:
    model = CAMClassifier("resnet10t", num_classes=4, output_stride=8)
    weights = save_model(tmp_path / "ckpt", model, {"classes": list("abcd"), "step": 3})
    assert weights.name == "ckpt.safetensors" and (tmp_path / "ckpt.json").is_file()
    for path in (weights, tmp_path / "ckpt.json"):
        loaded, meta = load_model(path)
        assert meta["classes"] == list("abcd") and meta["architecture"] == model.architecture()
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k

    pth = tmp_path / "foreign.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, pth)
    with pytest.raises(DataError, match="no architecture recorded"):
        load_model(pth)
    loaded, _ = load_model(pth, architecture=model.architecture())
    assert torch.equal(loaded.head.weight, model.head.weight)
    with pytest.raises(DataError, match="do not match"):
        load_model(pth, architecture={**model.architecture(), "num_classes": 5})
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(DataError, match="junk"):
        load_model(tmp_path / "junk.safetensors", architecture=model.architecture())
    with pytest.raises(DataError, match="no checkpoint found"):
        load_model(tmp_path)


# ----------------------------------------------------------------------------- metrics


def test_average_precision_matches_scikit_learn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    targets = (rng.random((50, 4)) < 0.4).astype(np.float32)
    scores = np.round(rng.random((50, 4)) + targets * 0.3, 1)  # rounding creates ties
    targets[:, 3] = 0  # a class without positives
    ap = average_precision(torch.from_numpy(scores), torch.from_numpy(targets))
    for c in range(3):
        expected = sklearn_metrics.average_precision_score(targets[:, c], scores[:, c])
        assert ap[c].item() == pytest.approx(expected, rel=1e-9)
    assert torch.isnan(ap[3])


def test_f1_scores_by_hand() -> None:
    probs = torch.tensor([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    macro, micro = f1_scores(probs, targets)
    # class 0: tp 1, fp 1, fn 1 → 0.5; class 1: tp 1, fp 0, fn 1 → 2/3; micro: tp 2, fp 1, fn 2.
    assert macro == pytest.approx((0.5 + 2 / 3) / 2)
    assert micro == pytest.approx(4 / 7)
