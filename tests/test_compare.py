"""The training-strategy comparison (``wsss demo --compare``): runs, configs, table, CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from wsss.cli import app
from wsss.config import load_config
from wsss.errors import ConfigError
from wsss.pipeline import RunDir, comparison_config, comparison_pipeline, comparison_table
from wsss.pipeline.compare import (
    COMPARISON_RUNS,
    check_strategy_args,
    run_config,
    select_runs,
)

TINY = [
    "synth.train=16",
    "synth.val=0",
    "synth.size_min=64",
    "synth.size_max=80",
    "synth.head_size=[10,20]",  # heads must fit a 64-px image (size_min // 3)
    "data.val_split=null",
    "data.crop_size=64",
    "data.resize_long=[64,80]",
    "train.batch_size=4",
    "train.epochs=1",
    "train.num_workers=0",
    "demo.examples=2",
]


def test_select_runs_puts_the_ordinary_classifier_first_and_rejects_unknown_names():
    assert select_runs(["pnoc", "puzzle"]) == ["cam", "pnoc", "puzzle"]
    assert select_runs(["puzzle"]) == ["puzzle"]  # Puzzle-CAM needs no OC
    assert select_runs(["occse", "cam", "occse"]) == ["occse", "cam"]  # order kept, deduplicated
    assert select_runs(None) == list(COMPARISON_RUNS)
    with pytest.raises(ConfigError, match="unknown comparison run"):
        select_runs(["cam", "irn"])


def test_run_configs_share_the_budget_and_differ_only_in_strategy_smoothing_and_oc(tmp_path):
    base = comparison_config().classifier
    oc = tmp_path / "oc.safetensors"
    configs = {name: run_config(base, name, oc) for name in COMPARISON_RUNS}
    for name, config in configs.items():
        strategy, epsilon = COMPARISON_RUNS[name]
        assert config.train.strategy == strategy
        assert config.train.label_smoothing == epsilon
        assert ("oc" in config.train.strategy_args) == (strategy in {"occse", "poc", "pnoc"})
        assert config.model == base.model and config.data == base.data
        assert config.train.epochs == base.train.epochs
        assert config.train.lr == base.train.lr and config.train.batch_size == base.train.batch_size
    assert configs["pnoc"].train.strategy_args["oc"] == str(oc)
    assert base.train.strategy_args == {}  # the base is not modified in place


def test_scales_are_pinned_but_can_be_overridden():
    assert comparison_config().maps.scales == (1.0, 0.5)
    assert comparison_config(["maps.scales=[1.0]"]).maps.scales == (1.0,)
    assert comparison_config(["demo.scales=[1.0]"]).maps.scales == (1.0,)  # the earlier key


def test_the_comparison_resolves_to_the_settings_it_had_before():
    # synth-compare's classifier, validated once after its last epoch, scales 1 and 0.5.
    settings = comparison_config()
    assert settings.classifier == load_config(
        "synth-compare", ["train.val_every=8", "train.device=auto"]
    )
    assert (settings.eval.threshold, settings.report.examples, settings.run.split) == (
        0.3,
        8,
        "train",
    )


def test_the_table_lists_evaluated_runs_in_order_with_the_oracle(tmp_path):
    run = RunDir(tmp_path)
    entry = {"threshold": 0.3, "miou": 40.0, "fp": 10.0, "fn": 50.0, "precision": 60.0}
    entry |= {"recall": 45.5, "head_recall": 99.0, "body_recall": 30.25, "body_far_recall": None}
    run.update_results({"occse": {**entry, "best": {"miou": 42.0, "threshold": 0.25}}})
    run.update_results({"cam": {**entry, "miou": 33.3, "best": {"miou": 35.0, "threshold": 0.4}}})
    lines = comparison_table(run, ["cam", "puzzle", "occse"]).splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| run")]
    assert [r.split(" | ")[0] for r in rows] == ["| cam", "| occse"]  # puzzle not evaluated
    cam = rows[0].split(" | ")
    assert cam[1:4] == ["vanilla", "0", "33.3"]
    assert rows[0].endswith("| 35.0 (0.4) |") and rows[1].endswith("| 42.0 (0.25) |")
    assert rows[1].split(" | ")[-2] == "–"  # a missing value shows as a dash
    assert "fixed threshold 0.3" in lines[-1]
    assert "No run evaluated yet" in comparison_table(RunDir(tmp_path / "empty"), ["cam"])


def test_the_pipeline_has_one_train_maps_eval_chain_per_run_and_a_report(tmp_path):
    run = RunDir(tmp_path)
    pipeline, runs = comparison_pipeline(
        run, comparison_config(), tmp_path / "data", select_runs(["poc"]), progress=False
    )
    assert pipeline.names == [
        "data",
        *("train_cam", "maps_cam", "eval_cam"),
        *("train_poc", "maps_poc", "eval_poc"),
        "report",
    ]
    by_name = dict(zip(pipeline.names, pipeline.stages, strict=True))
    assert set(by_name["train_poc"].requires) == {"data", "train_cam"}
    assert set(by_name["report"].requires) == {"eval_cam", "eval_poc"}
    assert runs["poc"]["train"]["strategy_args"]["oc"] == str(run.checkpoint("cam"))


def test_tiny_comparison_through_the_cli(tmp_path):
    out = tmp_path / "cmp"
    args = ["demo", "--compare", "--runs", "occse", "--out", str(out), "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--no-progress", *TINY])
    assert result.exit_code == 0, result.output + repr(result.exception)
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"cam", "occse"}  # the OC run was added
    table = (out / "table.md").read_text()
    assert "| cam | vanilla |" in table and "| occse | occse |" in table
    assert (out / "report.html").is_file()
    config = RunDir(out).read_config()
    assert config["runs"]["occse"]["train"]["strategy_args"]["oc"] == str(
        RunDir(out).checkpoint("cam")
    )
    # `wsss status` and `wsss report` know a comparison's own stage graph
    status = CliRunner().invoke(app, ["status", str(out)])
    assert status.exit_code == 0 and "8 done" in status.output, status.output
    (out / "report.html").unlink()
    assert CliRunner().invoke(app, ["report", str(out)]).exit_code == 0
    assert "occse" in (out / "report.html").read_text()


def test_runs_without_compare_is_an_error():
    result = CliRunner().invoke(app, ["demo", "--runs", "cam"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError) and "--compare" in str(result.exception)


def test_strategy_settings_reach_only_the_runs_whose_strategy_has_them(tmp_path):
    base = comparison_config(["train.strategy_args.lambda_re=[0,0,0.5]"]).classifier
    oc = tmp_path / "oc.safetensors"
    assert "lambda_re" not in run_config(base, "cam", oc).train.strategy_args
    assert "lambda_re" not in run_config(base, "occse", oc).train.strategy_args
    for name in ("puzzle", "poc", "pnoc_ls"):
        assert run_config(base, name, oc).train.strategy_args["lambda_re"] == [0, 0, 0.5]
    check_strategy_args(base, ["cam", "pnoc"])  # P-NOC has lambda_re: fine
    with pytest.raises(ConfigError, match="lambda_re"):
        check_strategy_args(base, ["cam", "occse"])
    typo = comparison_config(["train.strategy_args.lambda_ree=1"]).classifier
    with pytest.raises(ConfigError, match="lambda_ree"):
        check_strategy_args(typo, list(COMPARISON_RUNS))
    settings = comparison_config(["train.strategy_args.delta_noc=0.3"])
    with pytest.raises(ConfigError, match="delta_noc"):  # the pipeline checks before any work
        comparison_pipeline(RunDir(tmp_path), settings, tmp_path / "data", ["cam", "puzzle"])
