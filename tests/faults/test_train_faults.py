"""Planted faults around ``wsss train``: concurrent runs, SIGKILL mid-save, Ctrl-C, bit rot.

Each test plants one fault a user could meet and checks that training either does the right
thing or stops with one clear line that says what to do; none may leave a silent wrong result
or a traceback.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from wsss.cli import main
from wsss.config import load_config
from wsss.data.base import SegmentationDataset
from wsss.errors import ConfigError, DataError
from wsss.models import load_model
from wsss.train import engine
from wsss.train.engine import Trainer

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


CONFIG = [
    "model.backbone=resnet10t",
    "data.crop_size=16",
    "data.resize_long=[16,24]",
    "train.batch_size=4",
    "train.epochs=2",
    "train.lr=0.01",
    "train.device=cpu",
]

TINY_PRESET = """\
extends: synth-demo
data:
  crop_size: 48
  resize_long: [48, 64]
  max_samples: 8
train:
  epochs: 2
  batch_size: 4
  num_workers: 0
  val_every: 0
  device: cpu
"""


def run_main(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run the console entry point as a user would; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["wsss", *argv])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def train_args(synth: Path, tmp_path: Path, run: Path) -> list[str]:
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY_PRESET)
    return ["train", "--config", str(preset), "--data", str(synth), "--out", str(run)]


# 1. Two trainings into one run directory at once interleaved metrics.jsonl.


def test_second_training_into_a_busy_run_directory_is_refused(synth, tmp_path, monkeypatch, capsys):
    config = load_config(None, CONFIG)
    first = Trainer(config, tmp_path / "run", Tiny(), progress=False)
    with pytest.raises(ConfigError, match="is in use by another training"):
        Trainer(config, tmp_path / "run", Tiny(), progress=False)
    # The command line says so in one line, and writes nothing into the run.
    code, _, err = run_main(train_args(synth, tmp_path, tmp_path / "run"), monkeypatch, capsys)
    assert code == 2 and "is in use by another training" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    first.fit()
    lines = (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines]
    assert steps == sorted(steps)
    # Once the first is done, the directory is free again.
    Trainer(config, tmp_path / "run", Tiny(), resume=True, progress=False).fit()


# 2. SIGKILL during a save left full-size temporary files beside the checkpoint.


def _killed_while_saving(run: str) -> None:
    from wsss.io import checkpoints

    save_file, calls = checkpoints.save_file, []

    def save_then_die(tensors, path, metadata=None):
        save_file(tensors, path, metadata=metadata)
        calls.append(path)
        if len(calls) == 3:  # epoch 2's last.safetensors, written but not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoints.save_file = save_then_die
    Trainer(load_config(None, CONFIG), run, Tiny(), progress=False).fit()


def test_temporaries_of_a_killed_save_are_removed_on_the_next_start(tmp_path):
    run = tmp_path / "run"
    child = multiprocessing.get_context("fork").Process(target=_killed_while_saving, args=(run,))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    leftovers = list((run / "checkpoints").glob(".*.tmp*"))
    assert [p.name.startswith(".last.") for p in leftovers] == [True]  # the planted fault
    assert leftovers[0].stat().st_size > 100_000
    Trainer(load_config(None, CONFIG), run, Tiny(), resume=True, progress=False).fit()
    assert not list((run / "checkpoints").glob(".*.tmp*")) and not list(run.glob(".*.tmp*"))
    assert json.loads((run / "checkpoints/last.json").read_text())["step"] == 4


# 3. Ctrl-C printed only typer's "Aborted!"; a rerun without --resume refused without saying how.


def test_ctrl_c_says_how_to_resume_and_resuming_works(synth, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    args = [*train_args(synth, tmp_path, run), "--no-progress"]
    original = engine.Trainer._train_step

    def interrupted(self, micro, epoch):
        if self.step == 3:  # in epoch 2; the state of epoch 1 (step 2) is saved
            raise KeyboardInterrupt
        return original(self, micro, epoch)

    monkeypatch.setattr(engine.Trainer, "_train_step", interrupted)
    code, _, err = run_main(args, monkeypatch, capsys)
    assert code == 130 and "Traceback" not in err and "Aborted" not in err
    assert "interrupted at step 3 of 4" in err and "holds step 2" in err
    assert f"wsss train --out {run} --resume" in " ".join(err.split())

    code, _, err = run_main(args, monkeypatch, capsys)  # the same command again
    assert code == 2 and "already holds a training run" in err
    assert f"wsss train --out {run} --resume" in " ".join(err.split())

    monkeypatch.setattr(engine.Trainer, "_train_step", original)
    code, out, err = run_main([*args, "--resume"], monkeypatch, capsys)
    assert code in (0, None), err
    assert "trained vanilla" in out
    assert json.loads((run / "checkpoints/last.json").read_text())["step"] == 4


def test_ctrl_c_before_any_saved_state_says_to_rerun(synth, tmp_path, monkeypatch, capsys):
    def interrupted(self, micro, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.Trainer, "_train_step", interrupted)
    code, _, err = run_main(train_args(synth, tmp_path, tmp_path / "run"), monkeypatch, capsys)
    assert code == 130 and "before any state was saved" in err
    assert "rerun the same command to start again" in " ".join(err.split())


# 4. A checkpoint with a flipped bit gave all-zero maps.


def test_flipped_bit_in_a_trained_checkpoint_is_refused(synth, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    code, _, err = run_main(train_args(synth, tmp_path, run), monkeypatch, capsys)
    assert code in (0, None), err
    weights = run / "checkpoints" / "last.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x40  # a bit of the last tensor's data
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch, the file is damaged"):
        load_model(run)
    maps = tmp_path / "maps"
    cams = ["cams", "--checkpoint", str(run), "--data", str(synth), "--out", str(maps)]
    code, _, err = run_main(cams, monkeypatch, capsys)
    assert code == 2 and "checksum mismatch" in err and "Traceback" not in err
    assert not list(maps.glob("*.npz"))
