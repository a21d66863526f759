"""Typed configuration: presets, extends, key=value overrides, errors, saving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from wsss.config import (
    Config,
    apply_overrides,
    config_to_dict,
    list_presets,
    load_config,
    save_resolved,
)
from wsss.errors import ConfigError


def test_defaults_follow_the_papers_recipe() -> None:
    c = Config()
    assert (c.model.backbone, c.model.output_stride) == ("resnet50", 16)
    assert c.data.resize_long == (320, 640) and c.data.crop_size == 512
    t = c.train
    assert (t.optimizer, t.momentum, t.lr, t.weight_decay) == ("sgd", 0.0, 0.1, 1e-4)
    assert t.lr_multipliers == (1.0, 2.0, 10.0, 20.0)
    assert (t.schedule, t.poly_power, t.accumulate_mode) == ("poly", 0.9, "mean")


def test_overrides_are_parsed_and_type_checked() -> None:
    c = apply_overrides(
        Config(),
        [
            "train.lr=1",
            "train.epochs=3",
            "train.amp=false",
            "data.resize_long=[100, 140]",
            "model.weights=/tmp/w.safetensors",
            "train.augment.mixup_alpha=0.2",
            "train.strategy_args.oc=runs/oc",
            "train.strategy_args.lambda_noc=2.5",
            "data.split=01",
        ],
    )
    assert c.train.lr == 1.0 and isinstance(c.train.lr, float)
    assert c.train.epochs == 3 and c.train.amp is False
    assert c.data.resize_long == (100, 140)
    assert c.model.weights == "/tmp/w.safetensors"
    assert c.train.augment.mixup_alpha == 0.2
    assert c.train.strategy_args == {"oc": "runs/oc", "lambda_noc": 2.5}
    assert c.data.split == "01"  # strings stay verbatim
    assert apply_overrides(c, ["model.weights=null"]).model.weights is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=2.5", "train.epochs: expected an integer"),
        ("train.amp=maybe", "train.amp: expected true or false"),
        ("train.optimizer=adam", "'sgd', 'adamw'"),
        ("data.resize_long=[1, 2, 3]", "expected 2 values"),
        ("train.lr=fast", "train.lr: expected a number"),
        ("train.lr", "not of the form key=value"),
        ("train=1", "is a section"),
        ("model.backbone.depth=3", "not a section"),
    ],
)
def test_bad_overrides_name_the_setting(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        apply_overrides(Config(), [override])


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), ["train.lrr=0.1"])
    message = str(info.value)
    assert "'train.lrr'" in message
    assert "train.lr," in message and "model.backbone" in message
    assert "train.augment.randaugment" in message


def test_presets_load_and_extend() -> None:
    assert {"synth-demo", "voc12-cam", "coco14-cam"} <= set(list_presets())
    demo = load_config("synth-demo")
    assert demo.model.backbone == "resnet10t" and demo.model.output_stride == 8
    assert demo.train.optimizer == "adamw" and demo.train.schedule == "onecycle"
    voc = load_config("voc12-cam")
    coco = load_config("coco14-cam", ["train.epochs=2"])
    assert coco.train.lr == 0.05 and coco.data.crop_size == 640 and coco.data.format == "coco"
    assert coco.train.optimizer == voc.train.optimizer == "sgd"  # inherited
    assert coco.model == voc.model
    assert coco.train.epochs == 2


def test_yaml_file_with_extends_and_errors(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  lr: 0.5\n  epochs: 4\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\ntrain:\n  epochs: 9\n")
    c = load_config(child)
    assert (c.train.lr, c.train.epochs) == (0.5, 9)

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 0.1\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"unknown setting train\.colour"):
        load_config(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(loop)
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'.*synth-demo"):
        load_config("nope")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(broken)


def test_save_resolved_round_trips(tmp_path: Path) -> None:
    c = load_config("synth-demo", ["train.seed=7", "train.strategy_args.k=3"])
    save_resolved(c, tmp_path, {"world_size": 1})
    assert load_config(tmp_path / "config.yaml") == c
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved == config_to_dict(c)
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["seeds"] == {"train": 7} and info["world_size"] == 1
    assert {"python", "torch", "timm", "numpy"} <= set(info["versions"])
