"""Faults planted at the command line: each must end in one clear line, never a traceback or a
silent wrong result (markup in user text, Ctrl-C, reruns, unwritable or full outputs, bad
thresholds)."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from wsss.cli import main, options
from wsss.data.image_io import write_image, write_mask


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``wsss ARGS`` through the console-script entry point: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["wsss", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split())


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """Two images whose class names look like Rich markup, with masks as predictions."""
    root = tmp_path / "voc"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    (root / "classes.txt").write_text("[/x]\n[bold]dog\n")
    rng = np.random.default_rng(0)
    for sample_id in ("a", "b"):
        mask = np.zeros((16, 20), np.uint8)
        mask[2:8, 2:9], mask[9:14, 10:18] = 1, 2
        write_image(root / "JPEGImages" / f"{sample_id}.jpg", rng.integers(0, 255, (16, 20, 3)))
        write_mask(root / "SegmentationClass" / f"{sample_id}.png", mask)
        write_mask(tmp_path / "pred" / f"{sample_id}.png", mask)
    return tmp_path


def _eval(voc: Path, *extra: str) -> list[str]:
    return ["eval", "--data", str(voc / "voc"), "--split", "train", *extra]


def test_markup_in_class_names_is_printed_verbatim(monkeypatch, capsys, voc):
    code, out, err = run_main(monkeypatch, capsys, *_eval(voc, "--masks", str(voc / "pred")))
    assert code == 0, err
    assert "[/x]" in out and "[bold]dog" in out and "100.0" in out


def test_markup_in_an_error_message_is_printed_verbatim(monkeypatch, capsys, tmp_path):
    data = tmp_path / "no[/x]such[small]"
    code, _, err = run_main(
        monkeypatch, capsys, "eval", "--data", str(data), "--split", "s", "--masks", str(tmp_path)
    )
    assert code == 2 and "no[/x]such[small]" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["nan", "1.5", "-0.1", "inf"])
def test_threshold_outside_the_unit_interval_names_the_option(monkeypatch, capsys, voc, value):
    code, _, err = run_main(
        monkeypatch, capsys, *_eval(voc, "--maps", str(voc), "--threshold", value)
    )
    assert code == 2
    assert f"--threshold must be a number in [0, 1], got {float(value)!r}" in err


def test_ctrl_c_says_how_to_resume_training(monkeypatch, capsys, tmp_path):
    import wsss.train.engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wsss.train.engine, "train", interrupted)
    out = tmp_path / "run"
    args = ("train", "--config", "synth-demo", "--data", str(tmp_path), "--out", str(out))
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 130
    assert f"resume with: wsss {' '.join(args)} --resume" in err


def test_ctrl_c_in_the_demo_says_to_rerun_it(monkeypatch, capsys, tmp_path):
    import wsss.pipeline.demo

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wsss.pipeline.demo, "run_demo", interrupted)
    code, _, err = run_main(monkeypatch, capsys, "demo", "--out", str(tmp_path / "d"))
    assert code == 130 and f"resume with: wsss demo --out {tmp_path / 'd'}" in err


def test_rerunning_training_without_resume_gives_the_command(monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "state.json").write_text("{}")
    code, _, err = run_main(
        monkeypatch, capsys, "train", "--config", "synth-demo", "--out", str(out)
    )
    assert code == 2 and f"resume it with: wsss train --out {out} --resume" in err


def test_an_output_that_is_a_file_or_a_folder_is_refused_before_any_work(
    monkeypatch, capsys, voc, tmp_path
):
    afile = tmp_path / "afile"
    afile.write_text("")
    code, _, err = run_main(
        monkeypatch, capsys, "train", "--config", "synth-demo", "--out", str(afile)
    )
    assert code == 2 and "is a file, not a run directory" in err
    code, _, err = run_main(monkeypatch, capsys, "demo", "--out", str(afile))
    assert code == 2 and "exists and is not a directory" in err
    masks = ("--masks", str(voc / "pred"))
    code, _, err = run_main(monkeypatch, capsys, *_eval(voc, *masks, "--out", str(tmp_path)))
    assert code == 2 and "is a directory; give a file name" in err
    inside = afile / "r.json"
    code, _, err = run_main(monkeypatch, capsys, *_eval(voc, *masks, "--out", str(inside)))
    assert code == 2 and "is a file, not a folder" in err


def test_an_unwritable_output_is_refused_before_any_work(monkeypatch, capsys, voc, tmp_path):
    import wsss.evaluate

    def never(*args, **kwargs):
        raise AssertionError("evaluated although the output cannot be written")

    monkeypatch.setattr(wsss.evaluate, "evaluate", never)
    # Tests run as root, who may write anywhere: deny the permission check instead.
    denied = SimpleNamespace(access=lambda *args, **kwargs: False, W_OK=os.W_OK, X_OK=os.X_OK)
    monkeypatch.setattr(options, "os", denied)
    args = _eval(voc, "--masks", str(voc / "pred"), "--out", str(tmp_path / "r.json"))
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and "no permission to write there" in err


def test_a_full_disk_does_not_lose_a_finished_evaluation(monkeypatch, capsys, voc, tmp_path):
    import wsss.io.atomic

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(wsss.io.atomic, "atomic_write_json", full)
    target = tmp_path / "r.json"
    args = _eval(voc, "--masks", str(voc / "pred"), "--out", str(target))
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and not target.exists()
    assert f"--out {target}: cannot write the result (No space left on device)" in err
    printed = json.loads(out[out.index("{") :])  # the result, as JSON, after the tables
    assert printed["miou"] == 100.0 and printed["num_images"] == 2


@pytest.mark.parametrize(
    ("code_", "message"),
    [
        (errno.ENOSPC, "no space left on the disk; free some space, then rerun to resume"),
        (errno.EACCES, "cannot write there (Permission denied); choose another output path"),
    ],
)
def test_os_errors_during_a_run_are_one_line(monkeypatch, capsys, tmp_path, code_, message):
    import wsss.train.engine

    def fails(*args, **kwargs):
        raise OSError(code_, "No space left on device" if code_ == errno.ENOSPC else
                      "Permission denied", "/runs/x/checkpoints/last.safetensors")  # fmt: skip

    monkeypatch.setattr(wsss.train.engine, "train", fails)
    args = (
        "train",
        "--config",
        "synth-demo",
        "--data",
        str(tmp_path),
        "--out",
        str(tmp_path / "r"),
    )
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and "Traceback" not in err
    assert f"/runs/x/checkpoints/last.safetensors: {message}" in err
