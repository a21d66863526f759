"""The run directory and the stage graph.

A run directory holds every artefact of one experiment::

    RUN/
      config.yaml        resolved configuration of the whole pipeline
      run_info.json      library versions, platform, seeds, command line
      train/<name>/      one training run per classifier (the trainer's layout: config,
                         metrics.jsonl, checkpoints/last.safetensors + .json, resumable state)
      maps/<method>/     class-map files, one ``<id>.npz`` per image
      lpcam/             LPCAM prototypes
      results.json       method → evaluation JSON (fixed threshold, oracle ``best``)
      timings.json       wall time of each stage
      report.html        self-contained HTML report
      logs/pipeline.log  what ran, was skipped or failed, and when
      .stages/           one completion record per stage (inputs hash, token, seconds)

A :class:`Stage` declares its outputs and parameters. :class:`Pipeline` runs stages in order
and skips a stage whose outputs are complete and whose inputs (its parameters and the records
of the stages it requires) are unchanged since it completed, so an interrupted run resumes
where it stopped. A stage whose inputs changed is reset (its outputs removed) before it runs
again, and everything downstream of it follows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wsss.errors import ConfigError
from wsss.io.atomic import atomic_write_json, atomic_write_text
from wsss.runtime.provenance import library_versions, now, write_run_info

__all__ = [
    "FunctionStage",
    "Pipeline",
    "RunDir",
    "Stage",
    "StageReport",
    "library_versions",
    "results_entry",
]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); delete it to start over") from e


def results_entry(fixed: Mapping[str, Any], best: Mapping[str, Any] | None = None) -> dict:
    """One ``results.json`` entry: the fixed-threshold result with the oracle best under ``best``.

    Args:
        fixed: Evaluation at the fixed (honest) threshold.
        best: Evaluation at the threshold chosen on ground truth; flagged ``oracle``.
    """
    entry = {k: v for k, v in fixed.items() if k != "best"}
    entry["oracle"] = bool(entry.get("oracle", False))
    if best is not None:
        entry["best"] = {**best, "oracle": True}
    return entry


class RunDir:
    """One experiment's directory of artefacts (created on first use).

    Args:
        path: Directory of the run.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"run directory {self.path} exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # Layout -------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def timings_path(self) -> Path:
        return self.path / "timings.json"

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"

    def train_dir(self, name: str) -> Path:
        """Directory of the training run of classifier ``name`` (e.g. ``cam``, ``pnoc``)."""
        return self.path / "train" / name

    def checkpoint(self, name: str) -> Path:
        """Final weights of classifier ``name`` (written by the trainer at its end)."""
        return self.train_dir(name) / "checkpoints" / "last.safetensors"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def stages_dir(self) -> Path:
        return self.path / ".stages"

    def maps_dir(self, method: str) -> Path:
        """Directory of the class-map files of ``method`` (e.g. ``cam``, ``lpcam``)."""
        return self.path / "maps" / method

    def contains(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` lies inside this run directory."""
        try:
            Path(path).resolve().relative_to(self.path.resolve())
        except ValueError:
            return False
        return True

    # Config -------------------------------------------------------------------------------

    @property
    def info_path(self) -> Path:
        return self.path / "run_info.json"

    def write_config(
        self,
        config: Any,
        seeds: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Save the resolved ``config`` (a dataclass or mapping) and the run's provenance.

        ``config.yaml`` holds the configuration alone; ``run_info.json`` holds the library
        versions, the platform, ``seeds`` and ``extra``.
        """
        atomic_write_text(self.config_path, yaml.safe_dump(_plain(config), sort_keys=False))
        write_run_info(self.path, seeds=seeds, extra=_plain(dict(extra or {})))

    def read_config(self) -> dict[str, Any]:
        """``config.yaml`` as a dict (empty if absent)."""
        if not self.config_path.is_file():
            return {}
        try:
            doc = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{self.config_path}: not valid YAML ({e})") from e
        return doc if isinstance(doc, dict) else {}

    def read_info(self) -> dict[str, Any]:
        """``run_info.json`` as a dict (empty if absent)."""
        return _read_json(self.info_path) if self.info_path.is_file() else {}

    # Results and timings ----------------------------------------------------------------

    def results(self) -> dict[str, Any]:
        """``results.json`` as a dict (empty if absent)."""
        if not self.results_path.is_file():
            return {}
        return _read_json(self.results_path)

    def update_results(self, entries: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Merge ``entries`` (method → evaluation) into ``results.json``; returns the merge.

        Methods already present and not named in ``entries`` are kept.
        """
        merged = self.results()
        merged.update({name: dict(value) for name, value in entries.items()})
        atomic_write_json(self.results_path, merged)
        return merged

    def timings(self) -> dict[str, float]:
        """Stage name → wall seconds of its last completed run."""
        if not self.timings_path.is_file():
            return {}
        return dict(_read_json(self.timings_path).get("stages", {}))

    def record_timing(self, stage: str, seconds: float) -> None:
        """Store the wall time of ``stage`` in ``timings.json``."""
        stages = self.timings()
        stages[stage] = round(float(seconds), 3)
        doc = {"stages": stages, "total_seconds": round(sum(stages.values()), 3)}
        atomic_write_json(self.timings_path, doc)

    # Logging ------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        """Append a time-stamped line to ``logs/pipeline.log``."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with open(self.logs_dir / "pipeline.log", "a", encoding="utf-8") as f:
            f.write(f"{now()} {message}\n")

    # Stage records ------------------------------------------------------------------------

    def stage_record(self, name: str) -> dict[str, Any] | None:
        """The completion record of stage ``name``, or None."""
        path = self.stages_dir / f"{name}.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None  # treated as never completed: the stage runs again

    def write_stage_record(self, name: str, record: Mapping[str, Any]) -> None:
        atomic_write_json(self.stages_dir / f"{name}.json", dict(record))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the run for the duration (POSIX; no-op elsewhere)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        lock_path = self.path / ".lock"
        with open(lock_path, "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"run directory {self.path} is in use by another process; wait for it or "
                    f"choose another --out"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _plain(obj: Any) -> Any:
    """Convert dataclasses, paths and tuples into YAML/JSON-safe builtins."""
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _plain(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


class Stage:
    """One step of a pipeline.

    Subclasses set ``name`` and implement :meth:`run`; they usually override :meth:`outputs`
    (what the stage writes) and :meth:`params` (settings that, when changed, make earlier
    outputs stale).

    Attributes:
        name: Unique name within a pipeline.
        requires: Names of the stages whose outputs this one reads; None means the stage
            just before it in the pipeline.
    """

    name: str = ""
    requires: tuple[str, ...] | None = None

    def outputs(self, run: RunDir) -> list[Path]:
        """Files or directories this stage writes."""
        return []

    def params(self) -> Mapping[str, Any]:
        """JSON-serialisable settings that determine the outputs."""
        return {}

    def is_complete(self, run: RunDir) -> bool:
        """Whether every output exists (a stage without outputs is never complete)."""
        outputs = self.outputs(run)
        return bool(outputs) and all(p.exists() for p in outputs)

    def reset(self, run: RunDir) -> None:
        """Remove stale outputs before a rerun; never touches files outside the run."""
        for p in self.outputs(run):
            if not run.contains(p):
                continue
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def run(self, run: RunDir) -> None:
        """Produce the outputs."""
        raise NotImplementedError


class FunctionStage(Stage):
    """A stage made of a function, e.g. ``FunctionStage("report", fn, ["report.html"])``.

    Args:
        name: Stage name.
        fn: Called as ``fn(run)``.
        outputs: Paths relative to the run, or a function of the run returning paths.
        params: Settings that, when changed, make earlier outputs stale.
        requires: As :attr:`Stage.requires`.
        complete: Optional completion test replacing the default (all outputs exist).
    """

    def __init__(
        self,
        name: str,
        fn: Callable[[RunDir], None],
        outputs: Sequence[str] | Callable[[RunDir], list[Path]] = (),
        params: Mapping[str, Any] | None = None,
        requires: tuple[str, ...] | None = None,
        complete: Callable[[RunDir], bool] | None = None,
    ) -> None:
        self.name = name
        self.fn = fn
        self.output_paths = outputs
        self.stage_params = dict(params or {})
        self.requires = requires
        self.complete = complete

    def __repr__(self) -> str:
        return f"FunctionStage({self.name!r})"

    def outputs(self, run: RunDir) -> list[Path]:
        if callable(self.output_paths):
            return list(self.output_paths(run))
        return [run.path / p for p in self.output_paths]

    def params(self) -> Mapping[str, Any]:
        return self.stage_params

    def is_complete(self, run: RunDir) -> bool:
        if self.complete is not None:
            return self.complete(run)
        return super().is_complete(run)

    def run(self, run: RunDir) -> None:
        self.fn(run)


@dataclass
class StageReport:
    """What happened to one stage in :meth:`Pipeline.run`.

    Attributes:
        name: Stage name.
        status: ``"ran"`` or ``"skipped"``.
        seconds: Wall time of this invocation (0 when skipped).
        recorded_seconds: Wall time of the run that produced the outputs.
    """

    name: str
    status: str
    seconds: float
    recorded_seconds: float


class Pipeline:
    """Stages run in order, each skipped when complete with unchanged inputs.

    Args:
        stages: The stages, in dependency order.
    """

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)
        seen: set[str] = set()
        for i, stage in enumerate(self.stages):
            if not stage.name:
                raise ConfigError(f"stage #{i} ({type(stage).__name__}) has no name")
            if stage.name in seen:
                raise ConfigError(f"two stages are named {stage.name!r}")
            for dep in self._requires(i):
                if dep not in seen:
                    raise ConfigError(
                        f"stage {stage.name!r} requires {dep!r}, which does not come before it"
                    )
            seen.add(stage.name)

    def _requires(self, index: int) -> tuple[str, ...]:
        stage = self.stages[index]
        if stage.requires is not None:
            return tuple(stage.requires)
        return (self.stages[index - 1].name,) if index > 0 else ()

    def _input_key(self, index: int, tokens: Mapping[str, str]) -> str:
        doc = {
            "params": _plain(self.stages[index].params()),
            "upstream": {dep: tokens.get(dep) for dep in self._requires(index)},
        }
        blob = json.dumps(doc, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def _check(
        self, run: RunDir, index: int, tokens: Mapping[str, str], force: Sequence[str]
    ) -> tuple[str, dict | None, bool]:
        """``(input key, stage record, whether the stage can be skipped)``."""
        stage = self.stages[index]
        key = self._input_key(index, tokens)
        record = run.stage_record(stage.name)
        skip = stage.name not in force and _is_done(record, key) and stage.is_complete(run)
        return key, record, skip

    def pending(self, run: RunDir, force: Sequence[str] = ()) -> list[str]:
        """Names of the stages that :meth:`run` would execute."""
        tokens: dict[str, str] = {}
        names = []
        for i, stage in enumerate(self.stages):
            _, record, skip = self._check(run, i, tokens, force)
            # A stage that reruns gets a new token, so every stage after it reruns too.
            tokens[stage.name] = record["token"] if skip else uuid.uuid4().hex
            if not skip:
                names.append(stage.name)
        return names

    def run(
        self,
        run: RunDir,
        force: Sequence[str] = (),
        on_stage: Callable[[StageReport], None] | None = None,
        on_start: Callable[[Stage], None] | None = None,
    ) -> list[StageReport]:
        """Run every stage that is not complete, in order.

        Args:
            run: The run directory.
            force: Names of stages to rerun even if complete (their dependents follow).
            on_stage: Called with each stage's report as soon as it is known.
            on_start: Called with each stage that is about to run.

        Returns:
            One report per stage.
        """
        unknown = set(force) - set(self.names)
        if unknown:
            raise ConfigError(f"unknown stage(s) {sorted(unknown)}; known: {self.names}")
        reports = []
        tokens: dict[str, str] = {}
        with run.lock():
            for i, stage in enumerate(self.stages):
                key, record, skip = self._check(run, i, tokens, force)
                if skip:
                    tokens[stage.name] = record["token"]
                    report = StageReport(stage.name, "skipped", 0.0, record.get("seconds", 0.0))
                    run.log(f"skip {stage.name} (complete)")
                else:
                    if on_start is not None:
                        on_start(stage)
                    tokens[stage.name], seconds = self._execute(run, stage, key, record)
                    report = StageReport(stage.name, "ran", seconds, seconds)
                reports.append(report)
                if on_stage is not None:
                    on_stage(report)
        return reports

    def _execute(
        self, run: RunDir, stage: Stage, key: str, record: dict | None
    ) -> tuple[str, float]:
        # Same inputs as an interrupted attempt: keep its partial outputs so the stage can
        # resume. Otherwise whatever is there was made from other inputs and is stale.
        resuming = record is not None and record.get("inputs") == key and record["status"] != "done"
        if not resuming:
            stage.reset(run)
        run.write_stage_record(
            stage.name, {"status": "running", "inputs": key, "started": now(), "token": None}
        )
        run.log(f"{'resume' if resuming else 'start'} {stage.name}")
        start = time.perf_counter()
        try:
            stage.run(run)
        except BaseException as e:
            run.log(f"failed {stage.name}: {type(e).__name__}: {e}")
            raise
        seconds = time.perf_counter() - start
        if stage.outputs(run) and not stage.is_complete(run):
            missing = [str(p) for p in stage.outputs(run) if not p.exists()][:5]
            raise RuntimeError(f"stage {stage.name!r} finished without writing {missing}")
        token = uuid.uuid4().hex
        run.write_stage_record(
            stage.name,
            {
                "status": "done",
                "inputs": key,
                "token": token,
                "finished": now(),
                "seconds": round(seconds, 3),
            },
        )
        run.record_timing(stage.name, seconds)
        run.log(f"done {stage.name} in {seconds:.1f} s")
        return token, seconds

    @property
    def names(self) -> list[str]:
        """Stage names in order."""
        return [s.name for s in self.stages]


def _is_done(record: Mapping[str, Any] | None, key: str) -> bool:
    return record is not None and record.get("status") == "done" and record.get("inputs") == key
