"""The run directory: one experiment's artefacts, records, results and logs.

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
      logs/pipeline.log  what ran (and why), was skipped or failed, and when
      .stages/           one completion record per stage (its parameters, their hash, token)

The directory's path is resolved (absolute, symbolic links followed), so that a run named by a
relative and then an absolute path records the same inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from wsss.errors import ConfigError
from wsss.io.atomic import atomic_write_json, atomic_write_text
from wsss.runtime.provenance import now, write_run_info

__all__ = ["RunDir", "plain", "results_entry"]


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
        self.path = Path(path).expanduser().resolve()
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(
                f"run directory {self.path} exists and is not a directory; choose another --out"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a parent is a file
            raise ConfigError(
                f"cannot create run directory {self.path}: a parent is not a directory"
            ) from None

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
        atomic_write_text(self.config_path, yaml.safe_dump(plain(config), sort_keys=False))
        write_run_info(self.path, seeds=seeds, extra=plain(dict(extra or {})))

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


def plain(obj: Any, resolve: bool = False) -> Any:
    """Convert dataclasses, paths and tuples into YAML/JSON-safe builtins.

    With ``resolve``, paths become absolute (symbolic links followed): the form stage records
    hash, so that one file named two ways gives one record.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name), resolve) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): plain(v, resolve) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v, resolve) for v in obj]
    if isinstance(obj, os.PathLike):
        return str(Path(obj).expanduser().resolve()) if resolve else os.fspath(obj)
    return obj
