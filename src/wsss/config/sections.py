"""Settings sections of the pipeline that depend on nothing above the configuration layer.

:class:`~wsss.pipeline.config.PipelineConfig` gathers them with the training, synthetic and
LPCAM settings; commands such as ``wsss eval`` use them alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from wsss.config.core import neutral
from wsss.errors import ConfigError

__all__ = [
    "PAPER_SCALES",
    "DemoSection",
    "EvalSection",
    "MapsSection",
    "ReportSection",
    "check_threshold",
]

PAPER_SCALES = (1.0, 0.5, 1.5, 2.0)


def check_threshold(value: float, name: str) -> float:
    """``value`` if it is a number in [0, 1]; otherwise a :class:`ConfigError` naming ``name``."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


@dataclass
class MapsSection:
    """Class maps (every map stage of the pipeline).

    Attributes:
        scales: Test-time augmentation scales, each with its horizontal flip (the papers'
            1.0, 0.5, 1.5, 2.0 by default).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``; also used to fit
            the LPCAM prototypes.
    """

    scales: tuple[float, ...] = PAPER_SCALES
    device: str = neutral("auto")

    def __post_init__(self) -> None:
        if not self.scales or not all(math.isfinite(s) and s > 0 for s in self.scales):
            raise ConfigError(f"maps.scales must be positive numbers, got {list(self.scales)}")


@dataclass
class EvalSection:
    """Evaluation of seed masks against the ground truth.

    Attributes:
        threshold: Fixed background threshold of the seed masks (the papers' 0.3).
        thresholds: Grid of the oracle threshold sweep; None: 0.05 … 0.80 in steps of 0.05
            (the P-NOC code's grid).
    """

    threshold: float = 0.3
    thresholds: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_threshold(self.threshold, "eval.threshold")
        if self.thresholds is not None:
            if not self.thresholds:
                raise ConfigError("eval.thresholds must list at least one threshold (or be null)")
            for t in self.thresholds:
                check_threshold(t, "eval.thresholds")


@dataclass
class ReportSection:
    """The HTML report.

    Attributes:
        examples: Images in the example grid.
    """

    examples: int = 8

    def __post_init__(self) -> None:
        if self.examples < 0:
            raise ConfigError(f"report.examples must be >= 0, got {self.examples}")


@dataclass
class DemoSection:
    """What ``wsss demo`` runs.

    Attributes:
        strategy: ``vanilla``, or ``pnoc`` (a vanilla classifier first, then P-NOC with it as
            the ordinary classifier).
        lpcam: Also fit LPCAM prototypes and compute LPCAM and LPCAM-F maps.
        split: Split on which maps are computed and evaluated.
    """

    strategy: Literal["vanilla", "pnoc"] = "vanilla"
    lpcam: bool = True
    split: str = "train"
