"""What a training run tells its user: plain log lines, TensorBoard on request, settings."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from wsss.config import Config, config_to_dict, load_config
from wsss.data.base import SegmentationDataset
from wsss.errors import ConfigError
from wsss.runtime.progress import LogLine
from wsss.train.engine import Trainer
from wsss.train.state import check_resumable
from wsss.train.validation import ClassificationValidation

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(SegmentationDataset):
    def __init__(self, n: int = 8) -> None:
        rng = np.random.default_rng(0)
        self.root, self.split, self.classes = Path("."), "train", ["a", "b"]
        self.ids = [str(i) for i in range(n)]
        self.labels = np.eye(2, dtype=np.float32)[np.arange(n) % 2]
        self.images = rng.integers(0, 255, (n, 24, 24, 3), dtype=np.uint8)

    def load_image(self, sample_id: str) -> np.ndarray:
        return self.images[int(sample_id)]

    def load_label(self, sample_id: str) -> np.ndarray:
        return self.labels[int(sample_id)]


BASE = [
    "model.backbone=resnet10t",
    "data.crop_size=16",
    "data.resize_long=[16,24]",
    "train.batch_size=2",
    "train.lr=0.01",
    "train.device=cpu",
]


def _config(*overrides: str) -> Config:
    return load_config(None, [*BASE, *overrides])


def test_without_a_terminal_training_prints_plain_lines(tmp_path: Path, capsys) -> None:
    # 8 images, batch 2: 4 steps per epoch; lines at steps 3, 4 (epoch end), 6, 8 and after
    # each validation, never a carriage return.
    config = _config("train.epochs=2", "train.log_every=3")
    hook = ClassificationValidation(Tiny(4), size=16, batch_size=2, progress=False)
    Trainer(config, tmp_path, Tiny(), [hook], progress=True).fit()  # stderr is not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    steps = [ln for ln in lines if " loss=" in ln]
    assert [ln.split()[1] for ln in steps] == ["3/8", "4/8", "6/8", "8/8"]
    assert all(ln.startswith("train: ") and " lr=" in ln for ln in steps)
    assert "epoch=1/2" in steps[0] and "epoch=2/2" in steps[-1]
    vals = [ln for ln in lines if "val/f1=" in ln]
    assert [ln.split()[1] for ln in vals] == ["4/8", "8/8"]
    assert all("val/map=" in ln and "val/loss=" in ln for ln in vals)
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged if "loss" in x] == [3, 4, 6, 8]


def test_no_progress_prints_lines_too(tmp_path: Path, capsys) -> None:
    Trainer(_config("train.epochs=1", "train.log_every=2"), tmp_path, Tiny(), progress=False).fit()
    steps = [ln for ln in capsys.readouterr().err.splitlines() if " loss=" in ln]
    assert [ln.split()[1] for ln in steps] == ["2/4", "4/4"]


def test_log_line_prints_at_multiples_of_every_and_on_request() -> None:
    out = io.StringIO()
    line = LogLine(total=10, desc="x", every=4, stream=out, initial=3)  # resumed at 3
    for _ in range(5):
        line.update(1)
    line.flush()
    line.flush()  # nothing new to print
    line.write(score="0.5")
    assert [ln.split()[1] for ln in out.getvalue().splitlines()] == ["4/10", "8/10", "8/10"]
    assert out.getvalue().splitlines()[-1].endswith("score=0.5")


def test_tensorboard_without_the_extra_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    with pytest.raises(ConfigError, match=r"wsss\[tensorboard\]"):
        Trainer(_config("train.tensorboard=true"), tmp_path, Tiny(), progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_nesterov_and_cosine_reach_the_optimiser(tmp_path: Path) -> None:
    config = _config(
        "train.momentum=0.9", "train.nesterov=true", "train.schedule=cosine", "train.warmup_steps=2"
    )
    trainer = Trainer(config, tmp_path, Tiny(), progress=False)
    opt = trainer.optimizers["main"]
    assert opt.defaults["nesterov"] is True and opt.defaults["momentum"] == 0.9
    assert [g["lr"] for g in opt.param_groups] == [0.0] * len(opt.param_groups)  # warmup k = 0
    with pytest.raises(ConfigError, match=r"train\.nesterov"):
        Trainer(_config("train.nesterov=true"), tmp_path / "b", Tiny(), progress=False)


def test_a_state_saved_before_new_settings_existed_still_resumes(tmp_path: Path) -> None:
    config = _config()
    saved = config_to_dict(config)
    for key in ("task", "nesterov", "warmup_steps", "tensorboard"):
        del saved["train"][key]  # a state written by an older wsss
    check_resumable(saved, config, tmp_path)
    with pytest.raises(ConfigError, match=r"train\.nesterov: False → True"):
        check_resumable(saved, _config("train.momentum=0", "train.nesterov=true"), tmp_path)
    # Settings that cannot change the result may differ.
    check_resumable(saved, _config("train.tensorboard=true", "train.log_every=1"), tmp_path)
