"""The C²AM command line: ``wsss train --task ccam --hints``, detector training on ``--masks``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from wsss.cli import app, main
from wsss.data.datasets import build_dataset
from wsss.io.maps import ClassMaps, MapStore
from wsss.io.masks import MaskStore


@pytest.fixture(scope="module")
def folders(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Hint maps and pseudo-saliency masks of the train split, from its ground truth."""
    root = tmp_path_factory.mktemp("folders")
    dataset = build_dataset("voc", synth, "train")
    hints, masks = MapStore(root / "hints"), MaskStore(root / "masks")
    hints.root.mkdir()
    masks.root.mkdir()
    for sample_id in dataset.ids:
        gt = dataset.load_mask(sample_id)
        fg = ((gt > 0) & (gt < 255)).astype(np.float32)
        hints.save(sample_id, ClassMaps([1], fg[None, ::4, ::4], fg[None]))
        masks.save(sample_id, (fg * 255).astype(np.uint8))
    return hints.root, masks.root


TINY = [
    "data.crop_size=48",
    "data.resize_long=[48,64]",
    "train.batch_size=4",
    "train.strategy_args.direction_images=4",
]


def test_train_ccam_h_from_the_command_line(synth: Path, folders, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    hints, _ = folders
    run = tmp_path / "run"
    args = ["train", "--config", "synth-ccam", "--data", str(synth), "--out", str(run)]
    options = ["--task", "ccam", "--hints", str(hints), "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(app, [*args, *options, *TINY])
    assert result.exit_code == 0, result.output
    assert "trained ccam" in result.output
    meta = json.loads((run / "checkpoints/last.json").read_text())
    assert meta["task"] == "ccam" and meta["hints"] == str(hints)
    assert meta["config"]["train"]["strategy_args"]["hints"] == str(hints)
    assert meta["direction"]["source"] == "hints" and meta["direction"]["value"] == 1


def test_train_the_detector_from_the_command_line(synth: Path, folders, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    _, masks = folders
    run = tmp_path / "det"
    args = ["train", "--config", "synth-saliency", "--data", str(synth), "--out", str(run)]
    options = ["--masks", str(masks), "--device", "cpu", "--no-progress"]
    small = ["data.crop_size=48", "data.resize_long=[48,64]", "train.batch_size=4"]
    result = CliRunner().invoke(app, [*args, *options, *small])
    assert result.exit_code == 0, result.output
    assert "trained saliency_detector" in result.output
    meta = json.loads((run / "checkpoints/last.json").read_text())
    assert meta["masks"] == str(masks) and meta["saliency"] == {"salient_class": 1}


def test_unknown_task_exits_2_with_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    argv = ["wsss", "train", "--config", "synth-ccam", "--out", str(tmp_path / "r"), "--task", "x"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "'x' is not one of" in err and "Traceback" not in err


def test_task_choices_are_the_registered_tasks() -> None:
    from wsss.cli.options import TaskName as Task
    from wsss.train.tasks import TASKS

    assert {t.value for t in Task} == {n for n in TASKS.names() if not n.startswith("_")}


def test_saliency_pseudo_writes_masks(synth: Path, folders, tmp_path: Path) -> None:
    hints, _ = folders  # one-channel maps of the foreground: usable as saliency maps
    sal = MapStore(tmp_path / "sal")
    sal.root.mkdir()
    for sample_id in MapStore(hints).ids():
        m = MapStore(hints).load(sample_id)
        sal.save(sample_id, ClassMaps([0], m.cam * 0.5, m.hr * 0.5))
    out = tmp_path / "pseudo"
    args = ["saliency", "pseudo", "--data", str(synth), "--saliency", str(sal.root)]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--crf-iterations", "0"])
    assert result.exit_code == 0, result.output
    assert "8 written, 0 kept" in result.output
    dataset = build_dataset("voc", synth, "train")
    for sample_id in dataset.ids:
        gt = dataset.load_mask(sample_id)
        expected = np.where((gt > 0) & (gt < 255), 255, 0)
        labelled = dataset.load_label(sample_id).any()
        np.testing.assert_array_equal(MaskStore(out).load(sample_id), expected * labelled)
    # 0.5 is not above 0.6: nothing salient (existing masks are redone with --overwrite).
    again = CliRunner().invoke(
        app,
        [
            *args,
            "--out",
            str(out),
            "--set",
            "saliency.crf_iterations=0",
            "--set",
            "saliency.threshold=0.6",
            "--overwrite",
        ],
    )
    assert again.exit_code == 0, again.output
    assert all(not MaskStore(out).load(i).any() for i in dataset.ids)


def test_eval_saliency_and_saliency_seeds(synth: Path, folders, tmp_path: Path) -> None:
    hints, _ = folders  # the ground-truth foreground as one-channel maps: a perfect saliency
    out = tmp_path / "sal.json"
    args = ["eval", "--data", str(synth), "--split", "train", "--saliency", str(hints)]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "oracle (best on the ground truth)" in result.output
    doc = json.loads(out.read_text())
    assert doc["protocol"] == "binary" and doc["threshold"] == 0.2
    assert doc["miou"] == pytest.approx(100.0) and doc["best"]["oracle"] is True
    priors = CliRunner().invoke(app, [*args, "--protocol", "priors", "--out", str(out)])
    assert priors.exit_code == 0, priors.output
    assert json.loads(out.read_text())["protocol"] == "priors"
    # Seeds: the hints as class maps of class 1 only cover images labelled with class 1;
    # here they serve as both, and the class maps are the ground truth's own classes.
    dataset = build_dataset("voc", synth, "train")
    cams = MapStore(tmp_path / "cams")
    cams.root.mkdir()
    for sample_id in dataset.ids:
        gt = dataset.load_mask(sample_id)
        keys = np.flatnonzero(dataset.load_label(sample_id) > 0.5) + 1
        hr = np.stack([(gt == k).astype(np.float32) for k in keys]) if len(keys) else None
        hr = np.zeros((0, *gt.shape), np.float32) if hr is None else hr
        cams.save(sample_id, ClassMaps(keys, hr[:, ::4, ::4], hr))
    seeds = CliRunner().invoke(app, [*args, "--maps", str(cams.root), "--out", str(out)])
    assert seeds.exit_code == 0, seeds.output
    doc = json.loads(out.read_text())
    assert doc["background"] == "saliency < t" and doc["miou"] == pytest.approx(100.0)
    soft = CliRunner().invoke(
        app,
        [
            *args,
            "--maps",
            str(cams.root),
            "--set",
            "saliency.seed_threshold=null",
            "--out",
            str(out),
        ],
    )
    assert soft.exit_code == 0, soft.output
    assert json.loads(out.read_text())["background"] == "1 - saliency"
    refused = CliRunner().invoke(app, [*args, "--maps", str(cams.root), "--threshold", "0.3"])
    assert refused.exit_code != 0 and "drop --threshold" in str(refused.exception)


def test_maps_method_ccam_writes_one_channel_maps(synth: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    run = tmp_path / "run"
    train = ["train", "--config", "synth-ccam", "--data", str(synth), "--out", str(run)]
    result = CliRunner().invoke(app, [*train, "--device", "cpu", "--no-progress", *TINY])
    assert result.exit_code == 0, result.output
    out = tmp_path / "sal"
    args = ["maps", "--method", "ccam", "--checkpoint", str(run / "checkpoints/last.safetensors")]
    args += ["--data", str(synth), "--out", str(out), "--scales", "1.0,0.5", "--workers", "0"]
    maps = CliRunner().invoke(app, [*args, "--device", "cpu", "--no-progress"])
    assert maps.exit_code == 0, maps.output
    store = MapStore(out)
    assert store.is_complete() and store.manifest()["classes"] == "agnostic"
    dataset = build_dataset("voc", synth, "train")
    for sample_id in dataset.ids:
        m = store.load(sample_id)
        assert m.keys.tolist() == [0] and m.hr.shape[1:] == dataset.load_mask(sample_id).shape
    # A CAM classifier is not a C²AM: refused before any map is written.
    wrong = CliRunner().invoke(
        app, [*args[:3], str(tmp_path / "nope.safetensors"), *args[4:], "--restart"]
    )
    assert wrong.exit_code != 0
