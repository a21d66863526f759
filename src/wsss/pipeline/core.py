"""The stage graph: stages that skip when complete, resume when interrupted, run everywhere.

A :class:`Stage` declares its outputs and parameters. :class:`Pipeline` runs stages in order
and skips a stage whose outputs are complete and whose inputs (its parameters and the records
of the stages it requires) are unchanged since it completed, so an interrupted run resumes
where it stopped. A stage whose inputs changed is reset (its outputs removed) before it runs
again, and everything downstream of it follows. Each stage's record keeps its parameters, so
the log says why a stage runs: which parameter changed (old → new), which upstream stage ran
again, or which output is missing.

Under ``torchrun`` (``WORLD_SIZE`` > 1) rank 0 owns the run: the lock, the stage records, the
results, the timings and the log. It takes every skip/run decision and hands it to the other
ranks, so all take the same path. A :attr:`Stage.distributed` stage runs on every rank between
two synchronisation points; any other stage runs on rank 0 while the others wait.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from wsss.config import diff_settings
from wsss.errors import ConfigError, WsssError
from wsss.pipeline.rundir import RunDir, plain, results_entry
from wsss.runtime import distributed
from wsss.runtime.provenance import library_versions, now

__all__ = [
    "FunctionStage",
    "Pipeline",
    "RunDir",
    "Stage",
    "StageReport",
    "library_versions",
    "results_entry",
]

T = TypeVar("T")


class Stage:
    """One step of a pipeline.

    Subclasses set ``name`` and implement :meth:`run`; they usually override :meth:`outputs`
    (what the stage writes) and :meth:`params` (settings that, when changed, make earlier
    outputs stale).

    Attributes:
        name: Unique name within a pipeline.
        requires: Names of the stages whose outputs this one reads; None means the stage
            just before it in the pipeline.
        distributed: Under ``torchrun``, whether every process runs the stage (training with
            DDP, maps sharded by rank); otherwise rank 0 runs it while the others wait.
    """

    name: str = ""
    requires: tuple[str, ...] | None = None
    distributed: bool = False

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
        reason: Why the stage ran (a changed parameter, an upstream stage that ran, a missing
            output, ...) or ``"complete"`` when skipped.
    """

    name: str
    status: str
    seconds: float
    recorded_seconds: float
    reason: str = ""


@dataclass
class _Decision:
    key: str
    params: Any
    upstream: dict[str, str | None]
    record: dict | None
    reason: str | None  # None: skip


def _from_main(fn: Callable[[], T], info: distributed.DistInfo) -> T:
    """Run ``fn`` on rank 0 and hand its result, or its error, to every rank."""
    if not info.enabled:
        return fn()
    import torch.distributed as dist

    payload: list[Any] = [None]
    if info.is_main:
        try:
            payload = [("ok", fn())]
        except BaseException as e:  # every rank must learn of it, or the others hang
            payload = [("error", e if _picklable(e) else WsssError(f"{type(e).__name__}: {e}"))]
    dist.broadcast_object_list(payload, src=0)
    status, value = payload[0]
    if status == "error":
        raise value
    return value


def _picklable(obj: Any) -> bool:
    try:
        pickle.dumps(obj)
    except Exception:
        return False
    return True


def _failed_anywhere(failed: bool, info: distributed.DistInfo) -> bool:
    """Whether any rank failed (a synchronisation point of every rank)."""
    if not info.enabled:
        return failed
    import torch.distributed as dist

    flags: list[Any] = [None] * info.world_size
    dist.all_gather_object(flags, failed)
    return any(flags)


def _describe(diffs: list[tuple[str, Any, Any]], limit: int = 4) -> str:
    shown = ", ".join(f"{k} {a!r} → {b!r}" for k, a, b in diffs[:limit])
    return shown + (f" (and {len(diffs) - limit} more)" if len(diffs) > limit else "")


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

    @property
    def names(self) -> list[str]:
        """Stage names in order."""
        return [s.name for s in self.stages]

    def _requires(self, index: int) -> tuple[str, ...]:
        stage = self.stages[index]
        if stage.requires is not None:
            return tuple(stage.requires)
        return (self.stages[index - 1].name,) if index > 0 else ()

    def _decide(
        self, run: RunDir, index: int, tokens: Mapping[str, str], force: Sequence[str]
    ) -> _Decision:
        """The stage's input key and record, and why it must run (None: it can be skipped)."""
        stage = self.stages[index]
        # Paths are hashed resolved: one file named two ways is one input.
        params = json.loads(json.dumps(plain(stage.params(), resolve=True), default=str))
        upstream = {dep: tokens.get(dep) for dep in self._requires(index)}
        blob = json.dumps({"params": params, "upstream": upstream}, sort_keys=True).encode()
        key = hashlib.sha256(blob).hexdigest()
        record = run.stage_record(stage.name)
        reason = self._reason(run, stage, key, params, upstream, record, force)
        return _Decision(key, params, upstream, record, reason)

    @staticmethod
    def _reason(
        run: RunDir,
        stage: Stage,
        key: str,
        params: Any,
        upstream: Mapping[str, str | None],
        record: Mapping[str, Any] | None,
        force: Sequence[str],
    ) -> str | None:
        if stage.name in force:
            return "forced"
        if record is None:
            return "first run"
        if record.get("inputs") == key:
            if record.get("status") != "done":
                return "resuming an interrupted run"
            if stage.is_complete(run):
                return None
            missing = [p for p in stage.outputs(run) if not p.exists()]
            return f"output missing: {missing[0]}" if missing else "outputs incomplete"
        causes = []
        if "params" not in record:
            causes.append("inputs changed (the record predates parameter logging)")
        else:
            diffs = diff_settings(record["params"] or {}, params or {})
            if diffs:
                causes.append(f"parameters changed: {_describe(diffs)}")
            ran = [d for d, t in upstream.items() if (record.get("upstream") or {}).get(d) != t]
            if ran:
                causes.append(f"upstream stage ran again: {', '.join(ran)}")
        if record.get("status") != "done":
            causes.append("an interrupted earlier run had other inputs")
        return "; ".join(causes) or "inputs changed"

    def pending(self, run: RunDir, force: Sequence[str] = ()) -> list[str]:
        """Names of the stages that :meth:`run` would execute."""
        return [name for name, _ in self.explain(run, force)]

    def explain(self, run: RunDir, force: Sequence[str] = ()) -> list[tuple[str, str]]:
        """``(name, why)`` of each stage that :meth:`run` would execute, in order."""
        tokens: dict[str, str] = {}
        out = []
        for i, stage in enumerate(self.stages):
            d = self._decide(run, i, tokens, force)
            # A stage that reruns gets a new token, so every stage after it reruns too.
            tokens[stage.name] = d.record["token"] if d.reason is None else uuid.uuid4().hex
            if d.reason is not None:
                out.append((stage.name, d.reason))
        return out

    def run(
        self,
        run: RunDir,
        force: Sequence[str] = (),
        on_stage: Callable[[StageReport], None] | None = None,
        on_start: Callable[[Stage, str], None] | None = None,
        prepare: Callable[[RunDir], None] | None = None,
    ) -> list[StageReport]:
        """Run every stage that is not complete, in order (on every rank under ``torchrun``).

        Args:
            run: The run directory.
            force: Names of stages to rerun even if complete (their dependents follow).
            on_stage: Called (on rank 0) with each stage's report as soon as it is known.
            on_start: Called (on rank 0) with each stage about to run and why it runs.
            prepare: Called (on rank 0) once the run is locked, before the first stage, e.g.
                to write ``config.yaml``.

        Returns:
            One report per stage.
        """
        unknown = set(force) - set(self.names)
        if unknown:
            raise ConfigError(f"unknown stage(s) {sorted(unknown)}; known: {self.names}")
        info = distributed.init_distributed()
        lock = contextlib.ExitStack()

        def take_lock() -> None:
            lock.enter_context(run.lock())
            if prepare is not None:
                prepare(run)

        _from_main(take_lock, info)
        reports = []
        tokens: dict[str, str] = {}
        with lock:
            for i, stage in enumerate(self.stages):
                d = _from_main(lambda i=i: self._decide(run, i, tokens, force), info)
                if d.reason is None:
                    tokens[stage.name] = d.record["token"]
                    if info.is_main:
                        run.log(f"skip {stage.name} (complete)")
                    recorded = d.record.get("seconds", 0.0)
                    report = StageReport(stage.name, "skipped", 0.0, recorded, "complete")
                else:
                    if on_start is not None and info.is_main:
                        on_start(stage, d.reason)
                    tokens[stage.name], seconds = self._execute(run, stage, d, info)
                    report = StageReport(stage.name, "ran", seconds, seconds, d.reason)
                reports.append(report)
                if on_stage is not None and info.is_main:
                    on_stage(report)
        return reports

    def _execute(
        self, run: RunDir, stage: Stage, d: _Decision, info: distributed.DistInfo
    ) -> tuple[str, float]:
        def prepare() -> None:
            # Same inputs as an interrupted attempt: keep its partial outputs so the stage can
            # resume. Otherwise whatever is there was made from other inputs and is stale.
            record = d.record
            resuming = (
                record is not None and record.get("inputs") == d.key and record["status"] != "done"
            )
            if not resuming:
                stage.reset(run)
            running = {"status": "running", "inputs": d.key, "started": now(), "token": None}
            run.write_stage_record(
                stage.name, {**running, "params": d.params, "upstream": d.upstream}
            )
            run.log(f"start {stage.name}: {d.reason}")

        _from_main(prepare, info)
        start = time.perf_counter()
        error: BaseException | None = None
        if stage.distributed or info.is_main:
            try:
                stage.run(run)
            except BaseException as e:
                error = e
        if _failed_anywhere(error is not None, info):
            if info.is_main:
                cause = (
                    "on another process" if error is None else f"{type(error).__name__}: {error}"
                )
                run.log(f"failed {stage.name}: {cause}")
            if error is not None:
                raise error
            raise WsssError(f"stage {stage.name!r} failed on another process (see its output)")
        seconds = time.perf_counter() - start

        def finish() -> str:
            if stage.outputs(run) and not stage.is_complete(run):
                missing = [str(p) for p in stage.outputs(run) if not p.exists()][:5]
                raise RuntimeError(f"stage {stage.name!r} finished without writing {missing}")
            token = uuid.uuid4().hex
            done = {"status": "done", "inputs": d.key, "token": token, "finished": now()}
            done |= {"seconds": round(seconds, 3), "params": d.params, "upstream": d.upstream}
            run.write_stage_record(stage.name, done)
            run.record_timing(stage.name, seconds)
            run.log(f"done {stage.name} in {seconds:.1f} s")
            return token

        return _from_main(finish, info), seconds
