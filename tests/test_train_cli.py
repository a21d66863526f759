"""``wsss train`` end to end on a tiny synthetic dataset, and its error messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wsss.cli import app, main

TINY = """\
extends: synth-demo
data:
  crop_size: 48
  resize_long: [48, 64]
train:
  epochs: 1
  batch_size: 4
  num_workers: 0
  select_by: val/f1
"""


def test_train_writes_a_run_directory_and_resumes(synth: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY)
    run = tmp_path / "run"
    runner = CliRunner()
    args = ["train", "--config", str(preset), "--data", str(synth), "--out", str(run)]
    shortcuts = ["--device", "cpu", "--workers", "0", "--format", "voc", "--strategy", "vanilla"]
    result = runner.invoke(
        app, [*args, *shortcuts, "--no-progress", "train.lr=0.1", "--set", "train.lr=0.003"]
    )
    assert result.exit_code == 0, result.output
    assert "trained vanilla" in result.output
    for name in ("config.yaml", "run_info.json", "metrics.jsonl"):
        assert (run / name).is_file()
    for name in ("last", "best"):
        assert (run / "checkpoints" / f"{name}.safetensors").is_file()
    meta = json.loads((run / "checkpoints/last.json").read_text())
    assert meta["config"]["train"]["lr"] == 0.003 and meta["config"]["data"]["root"] == str(synth)
    # the dedicated options set the same fields as --set would
    assert (meta["config"]["train"]["device"], meta["config"]["train"]["num_workers"]) == ("cpu", 0)
    assert meta["config"]["data"]["format"] == "voc"
    assert len(meta["classes"]) == 6 and "val/f1" in meta["metrics"]

    again = runner.invoke(app, ["train", "--out", str(run), "--resume", "--no-progress"])
    assert again.exit_code == 0, again.output
    refused = runner.invoke(app, [*args, "--no-progress", "train.lr=0.003"])
    assert refused.exit_code != 0 and "already holds a training run" in str(refused.exception)
    assert f"wsss train --out {run} --resume" in str(refused.exception)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["train.lrr=1"], "unknown setting 'train.lrr'"),
        (["--set", "train.strategy=nope"], "unknown strategy 'nope'"),
        (["--strategy", "nope"], "'nope' is not one of"),
        (["--config", "no-such-preset"], "unknown preset 'no-such-preset'"),
    ],
)
def test_bad_settings_exit_2_with_one_line(
    extra: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path
) -> None:
    argv = ["wsss", "train", "--config", "synth-demo", "--out", str(tmp_path / "r"), *extra]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
