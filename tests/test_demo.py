"""The demo end to end on a tiny benchmark, its resume, and its configuration."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from wsss.cli import app
from wsss.errors import ConfigError
from wsss.pipeline import RunDir, demo_config, demo_pipeline

# A few dozen tiny images, one epoch, one scale: the pipeline's plumbing, not its quality.
TINY = [
    "synth.train=24",
    "synth.val=0",
    "synth.size_min=64",
    "synth.size_max=80",
    "data.val_split=null",
    "data.crop_size=64",
    "data.resize_long=[64,80]",
    "train.batch_size=4",
    "train.epochs=1",
    "train.num_workers=0",
    "demo.scales=[1.0]",
    "demo.examples=3",
    "lpcam.k=2",
]


def test_tiny_demo_end_to_end_and_resume(tmp_path):
    out = tmp_path / "run"
    args = ["demo", "--out", str(out), "--device", "cpu", "--no-progress", *TINY]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)

    results = json.loads((out / "results.json").read_text())
    assert {"cam", "lpcam", "lpcam_f"} <= set(results)
    for method, entry in results.items():
        assert entry["threshold"] == 0.3 and entry["oracle"] is False, method
        assert entry["best"]["oracle"] is True
        assert entry["best"]["miou"] >= entry["miou"] - 1e-9  # the oracle picks the best
        for key in ("miou", "fp", "fn", "precision", "recall", "head_recall", "body_recall"):
            value = entry[key]
            assert value is None or 0.0 <= value <= 100.0, (method, key, value)
        assert len(entry["sweep"]) == 19
    num_train = 24
    assert len(list((out / "maps" / "cam").glob("*.npz"))) == num_train
    assert (out / "train" / "cam" / "checkpoints" / "last.safetensors").is_file()
    assert (out / "lpcam" / "prototypes.safetensors").is_file()

    text = (out / "report.html").read_text()
    HTMLParser().feed(text)
    assert text.count("data:image/png;base64,") == 3  # curves, part bars, examples
    assert f"{results['cam']['miou']:.1f}" in text

    timings = json.loads((out / "timings.json").read_text())["stages"]
    assert {"data", "train_cam", "maps_cam", "eval_cam", "report"} <= set(timings)
    assert "wall time" in result.output and "cam" in result.output

    # Same command again: every stage is complete and skipped, nothing is rewritten.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "skipped" in again.output
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    changed = {p.name for p in before if after.get(p) != before[p]}
    assert changed <= {"config.yaml", "run_info.json", "pipeline.log", ".lock"}

    # A changed setting reruns the stages that depend on it, and only those.
    def pending(*extra: str) -> list[str]:
        config = demo_config([*TINY, *extra], device="cpu")
        return demo_pipeline(RunDir(out), config, out / "data").pending(RunDir(out))

    assert pending() == []
    lpcam_stages = ["lpcam_fit", "maps_lpcam", "eval_lpcam", "eval_lpcam_f"]
    assert pending("lpcam.k=3") == [*lpcam_stages, "report"]
    assert pending("demo.threshold=0.25") == ["eval_cam", "eval_lpcam", "eval_lpcam_f", "report"]
    assert pending("train.epochs=2")[0] == "train_cam"
    assert pending("synth.seed=1")[0] == "data"


def test_pnoc_adds_its_classifier_after_the_vanilla_one(tmp_path):
    run = RunDir(tmp_path / "run")
    config = demo_config(TINY, strategy="pnoc", lpcam=False, device="cpu")
    pipeline = demo_pipeline(run, config, tmp_path / "data")
    names = pipeline.names
    assert names[:4] == ["data", "train_cam", "maps_cam", "eval_cam"]
    assert names[4:7] == ["train_pnoc", "maps_pnoc", "eval_pnoc"]
    assert names[-1] == "report" and "lpcam_fit" not in names
    pnoc = pipeline.stages[4].config.train
    assert pnoc.strategy == "pnoc"
    assert pnoc.strategy_args["oc"] == str(run.checkpoint("cam"))


def test_overrides_go_to_their_sections():
    config = demo_config(
        ["synth.train=40", "lpcam.k=5", "demo.scales=[1.0, 0.5]", "train.epochs=2"],
        device="cpu",
    )
    assert config.synth.train == 40
    assert config.prototypes.k == 5
    assert config.scales == (1.0, 0.5)
    assert config.classifier.train.epochs == 2
    assert config.classifier.train.device == "cpu"
    assert config.classifier.model.backbone == "resnet10t"  # from the synth-demo preset


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("synth.nope=1", "nope"),
        ("lpcam.k=many", "lpcam.k"),
        ("demo.scales=[0]", "scales"),
        ("train.nope=1", "train.nope"),
        ("demo.synth=1", "demo.synth"),
        ("novalue", "key=value"),
    ],
)
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        demo_config([override])


def test_unknown_strategy_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--strategy", "magic"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "vanilla, pnoc" in str(result.exception)
