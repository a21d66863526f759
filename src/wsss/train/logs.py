"""What a training run reports: ``metrics.jsonl``, TensorBoard, and progress on the console.

Every ``train.log_every`` optimiser steps (and at the end of each epoch) the engine appends one
JSON line to ``RUN/metrics.jsonl``, plus one per validation. On the console, a run shows a
progress bar per epoch when stderr is a terminal and progress is on; otherwise (a log file, a
CI job, ``--no-progress``) it prints the same records as plain lines, e.g.::

    train: 20/400 (12 s) epoch=1/10 loss=0.6931 lr=1.00e-02
    train: 40/400 (25 s) epoch=1/10 val/loss=0.6012 val/map=0.7421 val/f1=0.6250

TensorBoard is optional (``train.tensorboard=true``, the ``tensorboard`` extra:
``pip install "wsss[tensorboard]"``); the JSON lines are always written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wsss.errors import ConfigError
from wsss.io.atomic import atomic_write_text
from wsss.runtime.progress import LogLine, progress_bar, wants_bars

__all__ = ["ConsoleReport", "MetricsLogger", "check_tensorboard"]


def check_tensorboard() -> None:
    """Raise a :class:`ConfigError` when ``train.tensorboard=true`` cannot be honoured."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError(
            "train.tensorboard=true needs TensorBoard: pip install 'wsss[tensorboard]' (or "
            "pip install tensorboard), or set train.tensorboard=false; metrics.jsonl is "
            "written either way"
        ) from None


class MetricsLogger:
    """Appends JSON lines to ``metrics.jsonl``; mirrors scalars to TensorBoard on request.

    Args:
        run_dir: The run directory.
        tensorboard: Also write TensorBoard events to ``run_dir/tensorboard``.

    Raises:
        ConfigError: ``tensorboard`` is set and TensorBoard is not installed.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = False) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            check_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def truncate(self, step: int) -> None:
        """Drop lines logged after ``step`` (by a run that was interrupted, then resumed)."""
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        keep = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
        atomic_write_text(self.path, "".join(f"{ln}\n" for ln in keep))

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (must contain ``step``)."""
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.writer.add_scalar(k, v, record["step"])

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.writer is not None:
            self.writer.close()


def _fmt(key: str, value: Any) -> str:
    if not isinstance(value, float):
        return str(value)
    return f"{value:.2e}" if key == "lr" or key.startswith("lr/") else f"{value:.4f}"


class ConsoleReport:
    """Training progress on stderr: tqdm bars on a terminal, plain lines otherwise.

    Args:
        total_steps: Optimiser steps of the run.
        epochs: Epochs of the run.
        log_every: Print a line every this many steps (lines mode).
        progress: Bars when stderr is a terminal (else lines); False: always lines.
        enabled: Print anything at all (False on DDP ranks other than 0).
        step: The step the run starts from (resume).
    """

    def __init__(
        self,
        total_steps: int,
        epochs: int,
        log_every: int,
        progress: bool = True,
        enabled: bool = True,
        step: int = 0,
    ) -> None:
        self.epochs = epochs
        self.enabled = enabled
        self.bars = enabled and progress and wants_bars()
        self.bar: Any = None
        self.line = LogLine(
            total=total_steps, desc="train", every=log_every, disable=not enabled, initial=step
        )

    def start_epoch(self, epoch: int, steps: int, done: int) -> None:
        """A new epoch of ``steps`` steps, ``done`` of them already (resume)."""
        if self.bars:
            self.bar = progress_bar(
                total=steps, initial=done, desc=f"epoch {epoch + 1}/{self.epochs}", enabled=True
            )

    def step(self, epoch: int, logs: dict[str, float]) -> None:
        """One optimiser step ended with ``logs`` (``loss``, ``lr``, …)."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
            return
        values = {"loss": logs["loss"], "lr": logs["lr"]}
        self.line.set_postfix(
            epoch=f"{epoch + 1}/{self.epochs}", **{k: _fmt(k, v) for k, v in values.items()}
        )
        self.line.update(1)

    def end_epoch(self) -> None:
        """Close the epoch's bar, or print the epoch's last step."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        else:
            self.line.flush()

    def validation(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        """Print the validation scores after ``step`` (bars and lines alike)."""
        if metrics:
            self.line.n = step
            values = {k: _fmt(k, v) for k, v in metrics.items()}
            self.line.write(epoch=f"{epoch + 1}/{self.epochs}", **values)

    def close(self) -> None:
        """Close an open bar (an interrupted epoch)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
