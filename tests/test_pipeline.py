"""Run directory and stage graph: skip, resume, invalidation, results merge, timings."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from wsss.errors import ConfigError
from wsss.pipeline import FunctionStage, Pipeline, RunDir, Stage, results_entry


class Counting(Stage):
    """Writes ``<name>.txt`` holding its parameter; counts its calls."""

    def __init__(self, name: str, value: int = 0, requires: tuple[str, ...] | None = None):
        self.name = name
        self.value = value
        self.requires = requires
        self.calls = 0

    def outputs(self, run: RunDir) -> list[Path]:
        return [run.path / f"{self.name}.txt"]

    def params(self) -> dict:
        return {"value": self.value}

    def run(self, run: RunDir) -> None:
        self.calls += 1
        time.sleep(0.01)
        (run.path / f"{self.name}.txt").write_text(str(self.value))


class Shards(Stage):
    """Writes one file per item and can be interrupted after ``fail_after`` new files."""

    name = "shards"

    def __init__(self, items: list[str], fail_after: int | None = None):
        self.items = items
        self.fail_after = fail_after
        self.written: list[str] = []

    def outputs(self, run: RunDir) -> list[Path]:
        return [run.path / "shards" / f"{i}.txt" for i in self.items]

    def run(self, run: RunDir) -> None:
        (run.path / "shards").mkdir(exist_ok=True)
        for i in self.items:
            path = run.path / "shards" / f"{i}.txt"
            if path.exists():  # resumable, like the map extraction
                continue
            if self.fail_after is not None and len(self.written) == self.fail_after:
                raise KeyboardInterrupt
            path.write_text(i)
            self.written.append(i)


def test_complete_stages_are_skipped(tmp_path):
    run = RunDir(tmp_path / "run")
    a, b = Counting("a"), Counting("b")
    first = Pipeline([a, b]).run(run)
    assert [r.status for r in first] == ["ran", "ran"]
    second = Pipeline([a, b]).run(run)
    assert [r.status for r in second] == ["skipped", "skipped"]
    assert a.calls == b.calls == 1
    # the skipped report carries the time of the run that produced the outputs
    assert second[0].seconds == 0.0
    assert second[0].recorded_seconds == pytest.approx(first[0].seconds, abs=1e-3)
    assert second[0].recorded_seconds >= 0.01


def test_interrupted_stage_resumes_and_keeps_its_partial_outputs(tmp_path):
    run = RunDir(tmp_path / "run")
    items = [f"x{i}" for i in range(5)]
    with pytest.raises(KeyboardInterrupt):
        Pipeline([Counting("a"), Shards(items, fail_after=2)]).run(run)
    assert run.stage_record("shards")["status"] == "running"
    assert sorted(p.stem for p in (run.path / "shards").iterdir()) == ["x0", "x1"]

    a, shards = Counting("a"), Shards(items)
    reports = Pipeline([a, shards]).run(run)
    assert [r.status for r in reports] == ["skipped", "ran"]
    assert a.calls == 0
    assert shards.written == ["x2", "x3", "x4"]  # only the missing part was redone
    assert run.stage_record("shards")["status"] == "done"


def test_stage_with_missing_output_is_rerun(tmp_path):
    run = RunDir(tmp_path / "run")
    Pipeline([Counting("a"), Counting("b")]).run(run)
    (run.path / "b.txt").unlink()
    a, b = Counting("a"), Counting("b")
    Pipeline([a, b]).run(run)
    assert (a.calls, b.calls) == (0, 1)


def test_changed_params_rerun_the_stage_and_its_dependents_only(tmp_path):
    run = RunDir(tmp_path / "run")
    stages = [Counting("a"), Counting("b", 1), Counting("c", requires=("b",))]
    stages.append(Counting("d", requires=("a",)))
    Pipeline(stages).run(run)

    a, b = Counting("a"), Counting("b", 2)
    c, d = Counting("c", requires=("b",)), Counting("d", requires=("a",))
    pipe = Pipeline([a, b, c, d])
    assert pipe.pending(run) == ["b", "c"]
    pipe.run(run)
    assert (a.calls, b.calls, c.calls, d.calls) == (0, 1, 1, 0)
    assert (run.path / "b.txt").read_text() == "2"


def test_stale_outputs_are_reset_before_a_rerun(tmp_path):
    run = RunDir(tmp_path / "run")
    Pipeline([Counting("a", 1), Shards(["p", "q"])]).run(run)
    (run.path / "shards" / "q.txt").write_text("stale")
    # upstream changed: the old shards were made from other inputs and must all be redone
    shards = Shards(["p", "q"])
    Pipeline([Counting("a", 2), shards]).run(run)
    assert shards.written == ["p", "q"]
    assert (run.path / "shards" / "q.txt").read_text() == "q"


def test_reset_never_deletes_outside_the_run(tmp_path):
    outside = tmp_path / "shared.txt"
    outside.write_text("keep")
    run = RunDir(tmp_path / "run")
    stage = FunctionStage("ext", lambda r: None, outputs=lambda r: [outside])
    Pipeline([stage]).run(run)
    assert outside.read_text() == "keep"


def test_force_reruns_a_complete_stage(tmp_path):
    run = RunDir(tmp_path / "run")
    Pipeline([Counting("a"), Counting("b")]).run(run)
    a, b = Counting("a"), Counting("b")
    Pipeline([a, b]).run(run, force=["a"])
    assert (a.calls, b.calls) == (1, 1)
    with pytest.raises(ConfigError, match="unknown stage"):
        Pipeline([a]).run(run, force=["nope"])


def test_stage_that_does_not_write_its_outputs_fails(tmp_path):
    run = RunDir(tmp_path / "run")
    lazy = FunctionStage("lazy", lambda r: None, outputs=["out.txt"])
    with pytest.raises(RuntimeError, match="lazy"):
        Pipeline([lazy]).run(run)
    assert run.stage_record("lazy")["status"] == "running"


def test_pipeline_validates_names_and_dependencies():
    with pytest.raises(ConfigError, match="two stages"):
        Pipeline([Counting("a"), Counting("a")])
    with pytest.raises(ConfigError, match="requires 'b'"):
        Pipeline([Counting("a", requires=("b",)), Counting("b")])


def test_timings_are_recorded_per_stage(tmp_path):
    run = RunDir(tmp_path / "run")
    reports = Pipeline([Counting("a"), Counting("b")]).run(run)
    doc = json.loads(run.timings_path.read_text())
    assert set(doc["stages"]) == {"a", "b"}
    assert doc["total_seconds"] == pytest.approx(sum(doc["stages"].values()))
    assert doc["stages"]["a"] == pytest.approx(reports[0].seconds, abs=1e-3)
    assert "done a" in (run.logs_dir / "pipeline.log").read_text()


def test_results_are_merged_not_overwritten(tmp_path):
    run = RunDir(tmp_path / "run")
    cam = results_entry({"miou": 40.0, "threshold": 0.3}, {"miou": 45.0, "threshold": 0.2})
    run.update_results({"cam": cam})
    run.update_results({"lpcam": results_entry({"miou": 50.0, "threshold": 0.3})})
    run.update_results({"cam": results_entry({"miou": 41.0, "threshold": 0.3})})
    results = json.loads(run.results_path.read_text())
    assert list(results) == ["cam", "lpcam"]
    assert results["cam"]["miou"] == 41.0 and "best" not in results["cam"]
    assert results["lpcam"]["miou"] == 50.0


def test_results_entry_flags_the_oracle():
    entry = results_entry({"miou": 40.0, "oracle": False}, {"miou": 45.0})
    assert entry["oracle"] is False
    assert entry["best"] == {"miou": 45.0, "oracle": True}


def test_config_holds_resolved_config_versions_and_seeds(tmp_path):
    run = RunDir(tmp_path / "run")
    config = {"train": {"lr": 0.1, "scales": (1.0, 0.5)}, "out": tmp_path}
    run.write_config(config, {"seed": 7}, extra={"command": ["wsss", "demo"]})
    doc = yaml.safe_load(run.config_path.read_text())
    assert doc == {"train": {"lr": 0.1, "scales": [1.0, 0.5]}, "out": str(tmp_path)}
    assert run.read_config() == doc
    info = json.loads(run.info_path.read_text())
    assert info["seeds"] == {"seed": 7}
    assert info["command"] == ["wsss", "demo"]
    assert {"python", "torch", "numpy", "wsss"} <= set(info["versions"])


def test_corrupt_results_file_is_a_clear_error(tmp_path):
    run = RunDir(tmp_path / "run")
    run.results_path.write_text("{truncated")
    with pytest.raises(ConfigError, match=r"results\.json"):
        run.update_results({"cam": {}})


def test_run_directory_is_locked_while_a_pipeline_runs(tmp_path):
    run = RunDir(tmp_path / "run")

    def nested(r: RunDir) -> None:
        with RunDir(r.path).lock():
            pass

    with pytest.raises(ConfigError, match="in use"):
        Pipeline([FunctionStage("nested", nested)]).run(run)


def test_run_dir_on_a_file_is_an_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        RunDir(tmp_path / "f")


def test_a_run_named_relative_then_absolute_is_skipped(tmp_path, monkeypatch):
    # Paths in parameters are hashed resolved, and the run directory resolves its own path.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()

    def stages(root: Path) -> list[Stage]:
        return [FunctionStage("s", lambda r: (r.path / "s.txt").write_text("x"), ["s.txt"],
                              params={"root": root})]  # fmt: skip

    first = Pipeline(stages(Path("data"))).run(RunDir("run"))
    again = Pipeline(stages(tmp_path / "data")).run(RunDir(tmp_path / "run"))
    assert [r.status for r in first] == ["ran"] and [r.status for r in again] == ["skipped"]
    assert RunDir("run").path == (tmp_path / "run").resolve()


def test_records_keep_the_params_and_the_log_says_why_a_stage_reruns(tmp_path):
    run = RunDir(tmp_path / "run")

    def stages(b: int = 1) -> list[Stage]:
        return [Counting("a"), Counting("b", b), Counting("c", requires=("b",)), Counting("d")]

    started: list[tuple[str, str]] = []
    reports = Pipeline(stages()).run(run, on_start=lambda s, why: started.append((s.name, why)))
    assert started == [(n, "first run") for n in "abcd"]
    assert [r.reason for r in reports] == ["first run"] * 4
    assert run.stage_record("b")["params"] == {"value": 1}

    (run.path / "d.txt").unlink()
    why = dict(Pipeline(stages(b=2)).explain(run))
    assert why == {
        "b": "parameters changed: value 1 → 2",
        "c": "upstream stage ran again: b",
        # d follows c (requires defaults to the stage before) and misses its output
        "d": "upstream stage ran again: c",
    }
    Pipeline(stages(b=2)).run(run)
    assert dict(Pipeline(stages(b=2)).explain(run)) == {}
    (run.path / "d.txt").unlink()
    assert Pipeline(stages(b=2)).explain(run) == [("d", f"output missing: {run.path / 'd.txt'}")]
    assert Pipeline(stages(b=2)).explain(run, force=["a"])[0] == ("a", "forced")
    log = (run.logs_dir / "pipeline.log").read_text()
    assert "start b: parameters changed: value 1 → 2" in log
    assert "start c: upstream stage ran again: b" in log


def test_an_interrupted_stage_says_it_resumes(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        Pipeline([Shards(["x", "y"], fail_after=1)]).run(run)
    assert Pipeline([Shards(["x", "y"])]).explain(run) == [
        ("shards", "resuming an interrupted run")
    ]
