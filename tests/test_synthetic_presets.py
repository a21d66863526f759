"""The calibrated benchmark defaults and the `hard-bodies` presets that keep the old ones."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wsss.cli import app
from wsss.config import load_config
from wsss.data.synthetic import SynthConfig
from wsss.pipeline.config import PipelineConfig

DOCS = Path(__file__).resolve().parents[1] / "docs" / "synthetic.md"

# The benchmark before its calibration (issue 15), written out by hand: what `hard-bodies` keeps.
HARD_BODIES = {"body_tint": 0.04, "body_width": (14, 26), "head_size": (10, 20)}


def test_hard_bodies_presets_restore_the_old_knobs_and_nothing_else():
    old = dataclasses.replace(SynthConfig(), **HARD_BODIES)
    for knob, value in HARD_BODIES.items():
        assert getattr(SynthConfig(), knob) != value  # the calibration changed each of them
    hard = load_config("hard-bodies", cls=PipelineConfig)
    demo = load_config("demo", cls=PipelineConfig)
    assert hard.synth == old
    assert dataclasses.replace(hard, synth=demo.synth) == demo
    hard_compare = load_config("hard-bodies-compare", cls=PipelineConfig)
    compare = load_config("demo-compare", cls=PipelineConfig)
    assert hard_compare.synth == old
    assert dataclasses.replace(hard_compare, synth=compare.synth) == compare


def test_synth_cli_starts_from_a_presets_synth_section(tmp_path):
    runner = CliRunner()
    args = ["synth", "--train", "2", "--val", "0", "--workers", "1", "--no-progress"]
    result = runner.invoke(app, [*args, str(tmp_path / "a"), "--preset", "hard-bodies"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "a" / "synth.json").read_text())["config"]
    assert written == dataclasses.replace(SynthConfig(train=2, val=0), **HARD_BODIES).to_dict()
    # shortcuts and --set win over the preset
    more = ["--preset", "hard-bodies", "--set", "synth.body_tint=0.2", "--seed", "3"]
    result = runner.invoke(app, [*args, str(tmp_path / "b"), *more])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "b" / "synth.json").read_text())["config"]
    assert (written["body_tint"], written["seed"], written["head_size"]) == (0.2, 3, [10, 20])


def _documented_defaults() -> dict[str, str]:
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", DOCS.read_text(encoding="utf-8"), re.M)
    return {knob: value.strip() for knob, value in rows}


@pytest.mark.parametrize(
    "knob",
    [
        "body_tint",
        "body_contrast",
        "body_width",
        "body_length",
        "head_size",
        "body_bend",
        "context_rate",
        "context_absent_rate",
        "context_area",
        "cooccurrence",
        "objects_probs",
    ],
)
def test_defaults_are_the_documented_ones(knob):
    documented = _documented_defaults()[knob]
    value = getattr(SynthConfig(), knob)
    parsed = tuple(float(v) for v in documented.strip("()").split(","))
    expected = value if isinstance(value, tuple) else (value,)
    assert parsed == pytest.approx(expected), f"docs/synthetic.md says {knob} = {documented}"
