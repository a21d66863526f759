"""One configuration machinery for every root: neutral settings, sections, presets, --set."""

from __future__ import annotations

import typing

import pytest

from wsss.cli.options import DatasetFormat, Strategy, settings
from wsss.config import (
    Config,
    apply_overrides,
    config_to_dict,
    diff_settings,
    load_config,
    neutral_keys,
    result_params,
)
from wsss.config.core import override_key
from wsss.config.sections import EvalSection, MapsSection
from wsss.data.synthetic import SynthConfig
from wsss.errors import ConfigError
from wsss.maps.lpcam import PrototypeConfig
from wsss.pipeline import PipelineConfig, TrainStage


def test_result_neutral_settings_are_declared_once_and_used_by_stage_and_resume():
    assert neutral_keys(Config) == {
        "train.device",
        "train.num_workers",
        "train.checkpoint_every",
        "train.log_every",
        "train.tensorboard",
    }
    params = result_params(Config())
    assert "device" not in params["train"] and "log_every" not in params["train"]
    assert "val_every" in params["train"]  # validation draws from torch's global generator

    base = load_config(None, ["data.root=/d"])
    moved = apply_overrides(base, ["train.device=cpu", "train.num_workers=3"])
    validated = apply_overrides(base, ["train.val_every=2"])
    assert TrainStage("x", moved).params() == TrainStage("x", base).params()
    assert TrainStage("x", validated).params() != TrainStage("x", base).params()

    from wsss.train.state import check_resumable

    check_resumable(config_to_dict(base), moved, "run")
    with pytest.raises(ConfigError, match=r"train\.val_every: 1 → 2"):
        check_resumable(config_to_dict(base), validated, "run")


def test_any_dataclass_root_loads_overrides_and_checks_types():
    p = load_config(None, ["lpcam.k=8", "tau=0.2"], cls=PrototypeConfig, section="lpcam")
    assert (p.k, p.tau) == (8, 0.2)
    s = apply_overrides(SynthConfig(), [("context_classes", [1]), "synth.train=10"], "synth")
    assert s.context_classes == (1,) and s.train == 10
    with pytest.raises(ConfigError, match=r"unknown setting 'nope'.*valid keys: seed, train"):
        apply_overrides(SynthConfig(), ["nope=1"], "synth")
    with pytest.raises(ConfigError, match=r"lpcam k must be >= 1"):  # the class's own checks
        load_config(None, ["k=0"], cls=PrototypeConfig)
    # SynthConfig's dict code is the machinery: types are checked, not passed through
    with pytest.raises(ConfigError, match=r"synth\.train: expected an integer"):
        SynthConfig.from_dict({"train": "many"})
    with pytest.raises(ConfigError, match=r"unknown setting synth\.sed"):
        SynthConfig.from_dict({"sed": 1})


def test_pipeline_config_has_a_section_per_stage_and_reads_training_presets():
    config = load_config("demo", cls=PipelineConfig)
    assert config.classifier == load_config("synth-demo")  # the same three sections
    assert config.maps == MapsSection(scales=(1.0,))
    assert load_config("synth-demo", cls=PipelineConfig).maps.scales == (1.0, 0.5, 1.5, 2.0)
    assert load_config("demo-compare", cls=PipelineConfig).run.lpcam is False
    with pytest.raises(ConfigError, match=r"unknown setting (run|maps)"):
        load_config("demo")  # a pipeline preset is not a training configuration
    renamed = apply_overrides(PipelineConfig(), ["demo.threshold=0.2"])
    assert renamed.eval == EvalSection(threshold=0.2)
    for bad in ("eval.threshold=nan", "eval.threshold=-0.1", "eval.thresholds=[0.5,2]"):
        with pytest.raises(ConfigError, match=r"eval\.threshold"):
            apply_overrides(PipelineConfig(), [bad])


def test_diffs_and_override_keys():
    old = {"train": {"lr": 0.1, "args": {"k": 1}}, "seed": 0}
    new = {"train": {"lr": 0.2, "args": {"k": 1, "j": 2}}, "seed": 0}
    assert diff_settings(old, new) == [("train.args.j", None, 2), ("train.lr", 0.1, 0.2)]
    assert diff_settings(old, new, ignore=["train.args"]) == [("train.lr", 0.1, 0.2)]
    assert override_key(" train.lr = 0.1") == "train.lr"
    assert override_key(("maps.scales", [1.0])) == "maps.scales"


def test_command_settings_apply_shortcuts_then_set_items():
    config = settings(
        SynthConfig, ["synth.train=5"], {"train": 3, "val": None, "seed": 4}, section="synth"
    )
    assert (config.train, config.val, config.seed) == (5, SynthConfig.val, 4)
    e = settings(EvalSection, [], {"threshold": 0.25}, section="eval")
    assert e == EvalSection(threshold=0.25)


def test_enumerated_choices_match_the_registries():
    from wsss.data.datasets import DATASETS
    from wsss.train.strategies import STRATEGIES

    assert sorted(f.value for f in DatasetFormat) == DATASETS.names()
    shipped = [n for n in STRATEGIES.names() if not n.startswith("_")]  # "_": test doubles
    assert sorted(s.value for s in Strategy) == shipped
    from wsss.cli.demo_cmds import DemoStrategy
    from wsss.config.sections import DemoSection

    hints = typing.get_type_hints(DemoSection)
    assert [s.value for s in DemoStrategy] == list(typing.get_args(hints["strategy"]))
