"""The demo's C²AM stages on a tiny benchmark: C²AM and C²AM-H (hints from the demo's CAMs),
their saliency maps and scores, pseudo-saliency masks, CAM seeds with a saliency background."""

from __future__ import annotations

import json

import pytest
import torch

from tiny_settings import TINY_BENCHMARK
from wsss.io.maps import MapStore
from wsss.pipeline import RunDir, demo_config, demo_pipeline, run_demo

TINY = [
    *TINY_BENCHMARK,
    "synth.train=16",
    "synth.val=0",
    "train.batch_size=4",
    "maps.scales=[1.0]",
    "report.examples=2",
    "demo.lpcam=false",
    "run.segmentation=false",  # tests/test_demo.py
    "saliency.train=[train.batch_size=4, data.crop_size=64, 'data.resize_long=[64,72]', "
    "train.strategy_args.direction_images=8]",
]


def test_demo_with_ccam_end_to_end(tmp_path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "run"
    config = demo_config(TINY, device="cpu")
    assert config.run.ccam and config.saliency.train_preset == "synth-ccam"
    result = run_demo(out, config, progress=False)
    results = result.results
    for key in ("saliency_c2am", "saliency_c2am_h"):
        entry = results[key]
        assert entry["kind"] == "saliency" and entry["protocol"] == "binary"
        assert entry["threshold"] == 0.2 and entry["best"]["oracle"] is True
        for name in ("miou", "precision", "recall"):
            assert entry[name] is None or 0 <= entry[name] <= 100
        assert entry["best"]["miou"] >= entry["miou"] - 1e-9
    seeds = results["cam_saliency"]
    assert seeds["background"] == "saliency < t" and seeds["saliency_threshold"] == 0.2
    assert seeds["oracle"] is False
    assert {"miou", "fp", "fn", "precision", "recall", "per_class"} <= set(seeds)
    run = RunDir(out)
    for name in ("c2am", "c2am_h"):
        meta = json.loads(run.checkpoint(name).with_suffix(".json").read_text())
        assert meta["task"] == "ccam"
        assert meta["config"]["model"]["weights"] == str(run.checkpoint("cam"))
        assert len(MapStore(run.maps_dir(name)).ids()) == 16
    assert json.loads(run.checkpoint("c2am_h").with_suffix(".json").read_text())["hints"] == str(
        run.maps_dir("cam")
    )
    assert len(list((out / "pseudo_saliency" / "c2am_h").glob("*.png"))) == 16
    timings = json.loads((out / "timings.json").read_text())["stages"]
    assert {"train_c2am", "train_c2am_h", "maps_c2am_h", "pseudo_saliency_c2am_h"} <= set(timings)
    assert "saliency" in (out / "report.html").read_text()
    from wsss.cli.demo_cmds import summary_table

    assert summary_table(results).row_count == len(results)  # entries without a threshold too

    def pending(*extra: str) -> list[str]:
        changed = demo_config([*TINY, *extra], device="cpu")
        return demo_pipeline(run, changed, out / "data").pending(run)

    assert pending() == []
    assert pending("saliency.threshold=0.3") == [
        "eval_saliency_c2am",
        "eval_saliency_c2am_h",
        "pseudo_saliency_c2am_h",
        "report",
    ]
    assert pending("saliency.train=[train.batch_size=4]")[0] == "train_c2am"


def test_ccam_needs_the_training_split(tmp_path) -> None:
    from wsss.errors import ConfigError

    config = demo_config([*TINY, "demo.split=val"], device="cpu")
    with pytest.raises(ConfigError, match=r"run\.ccam needs run\.split"):
        demo_pipeline(RunDir(tmp_path / "run"), config)


def test_the_ccam_option_is_a_shortcut(monkeypatch, tmp_path) -> None:
    from typer.testing import CliRunner

    import wsss.pipeline.demo
    from wsss.cli import app

    seen = {}

    def fake_run_demo(out, config, **kwargs):
        seen["config"] = config
        raise KeyboardInterrupt  # stop before any work

    monkeypatch.setattr(wsss.pipeline.demo, "run_demo", fake_run_demo)
    CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--no-ccam"])
    assert seen["config"].run.ccam is False
    CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--set", "saliency.threshold=0.3"])
    assert seen["config"].run.ccam is True and seen["config"].saliency.threshold == 0.3
