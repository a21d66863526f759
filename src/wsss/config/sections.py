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
    "NEEDS_OC",
    "PAPER_SCALES",
    "STRATEGY_NAMES",
    "DemoSection",
    "EvalSection",
    "MapsSection",
    "RefineSection",
    "ReportSection",
    "RunSection",
    "SaliencySection",
    "check_threshold",
]

PAPER_SCALES = (1.0, 0.5, 1.5, 2.0)
_BACKGROUNDS = ("auto", "irn", "pnoc", "lpcam")  # refine.background presets (METHODS §7)


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


STRATEGY_NAMES = ("vanilla", "puzzle", "occse", "poc", "pnoc")
NEEDS_OC = ("occse", "poc", "pnoc")  # strategies trained against an ordinary classifier


@dataclass
class RunSection:
    """Which stages a pipeline run (``wsss run``, ``wsss demo``) has.

    The run trains the pipeline's classifier (``model``, ``data``, ``train``) as ``cam``; it
    is the ordinary classifier (OC) of a strategy, LPCAM's classifier and, by default, the
    backbone of C²AM.

    Attributes:
        synthetic: Generate the synthetic benchmark (section ``synth``) into ``data.root``
            (default ``<run>/data``) when absent; false: ``data.root`` is a given dataset.
        strategy: ``vanilla``, or a second classifier trained with this strategy
            (``puzzle``, ``occse``, ``poc``, ``pnoc``; the last three against ``cam`` as OC);
            its CAMs are the map ``<strategy>``.
        strategy_preset: Training preset of that classifier's ``train`` section (e.g.
            ``voc12-pnoc``; its model and dataset are the pipeline's classifier's, since the
            NOC of P-NOC starts from the OC's weights); None: the classifier's own settings
            with ``train.strategy`` swapped.
        strategy_train: ``key=value`` overrides of that classifier's training configuration
            (e.g. ``["train.accumulate=2"]``).
        lpcam: Fit LPCAM prototypes of ``cam`` and compute LPCAM and LPCAM-F maps.
        ccam: Train C²AM and C²AM-H (section ``saliency``), compute and score their saliency
            maps (needs ``split`` = ``data.split``: the hints are maps of the training images).
        split: Split whose maps, affinity labels and pseudo masks are computed (the
            segmentation network's training images).
        eval_split: Split on which seeds, saliency, affinity labels and pseudo masks are
            scored (None: ``split``); VOC's papers compute on ``train_aug`` and score on
            ``train``.
        segmentation: Train the segmentation network (section ``segmentation``) on pseudo
            masks, predict and score ``segmentation.split``.
        pseudo_masks: Refined method whose random-walk masks train it (None: the first of
            ``refine.methods``; an LPCAM name with ``lpcam`` false: the first refined method).
    """

    synthetic: bool = True
    strategy: Literal["vanilla", "puzzle", "occse", "poc", "pnoc"] = "vanilla"
    strategy_preset: str | None = None
    strategy_train: tuple[str, ...] = ()
    lpcam: bool = True
    ccam: bool = True
    split: str = "train"
    eval_split: str | None = None
    segmentation: bool = False
    pseudo_masks: str | None = None

    @property
    def scored_split(self) -> str:
        """The split evaluations use."""
        return self.eval_split or self.split


DemoSection = RunSection  # the section's name before ``wsss run``


@dataclass
class SaliencySection:
    """Class-agnostic saliency: pseudo-saliency masks and saliency evaluation (METHODS.md §6).

    Attributes:
        threshold: Salient strictly above it: the pseudo-saliency threshold and the fixed
            (honest) threshold of the saliency metrics (0.2, the C²AM code's).
        crf_iterations: Mean-field iterations of the two-label CRF of pseudo-saliency (10;
            0 leaves the thresholded map unrefined and needs no ``crf`` extra).
        seed_threshold: Background of seed masks with saliency: the 0/1 plane
            ``saliency < value`` (default 0.2; P-NOC's evaluation thresholds the saliency, and
            on the synthetic benchmark it beats ``1 − saliency``: docs/saliency.md), or None
            for the soft ``1 − saliency``.
        train_preset: Training preset (or YAML file) of the pipeline's C²AM and C²AM-H
            stages (``synth-ccam``: the CPU recipe of the demo).
        train: ``key=value`` overrides of that training configuration (e.g.
            ``["train.epochs=2"]``); the pipeline's ``train.device`` and ``train.num_workers``
            apply too.
        hints: Map of the run whose CAMs are C²AM-H's hints and, with the saliency as
            background, the ``<hints>_saliency`` seeds (``cam``; ``pnoc`` in ``voc12-pnoc``).
        backbone: Trained classifier of the run whose backbone initialises C²AM and C²AM-H
            (``cam``: the demo, which has no pretrained weights); None: the training preset's
            own initialisation (ImageNet weights in ``voc12-ccam``, as in the papers).
        pseudo_masks: Also write the C²AM-H pseudo-saliency masks (threshold + two-label CRF),
            the training targets of a saliency detector.
    """

    threshold: float = 0.2
    crf_iterations: int = 10
    seed_threshold: float | None = 0.2
    train_preset: str = "synth-ccam"
    train: tuple[str, ...] = ()
    hints: str = "cam"
    backbone: str | None = "cam"
    pseudo_masks: bool = True

    def __post_init__(self) -> None:
        check_threshold(self.threshold, "saliency.threshold")
        if self.crf_iterations < 0:
            raise ConfigError(f"saliency.crf_iterations must be >= 0, got {self.crf_iterations}")
        if self.seed_threshold is not None:
            check_threshold(self.seed_threshold, "saliency.seed_threshold")


@dataclass
class RefineSection:
    """Refinement of seeds into pseudo masks: affinity labels, boundary network, random walk.

    Attributes:
        methods: Seeds to refine (map names of the run, e.g. ``cam``, ``lpcam``); empty: none.
        boundary: ``per_method`` (one boundary network per method, on its own affinity
            labels) or ``shared`` (one network, on the first method's labels, for all).
        affinity: Thresholds of the conventional affinity labels: ``auto`` (``lpcam`` for
            LPCAM seeds as in the LPCAM code, ``irn`` otherwise), ``irn`` or ``lpcam``.
        affinity_crf: Label CRF on the affinity labels (the reference: on).
        background: Background score after the walk: ``auto`` (``lpcam`` 0.35 for LPCAM seeds,
            ``irn`` 0.25 otherwise), ``irn``, ``pnoc``, ``lpcam`` or a number.
        saliency: Folder of saliency maps (relative to the run directory, or absolute):
            saliency-aware affinity labels and a ``1 − saliency`` background; None: neither.
        saliency_background: With ``saliency``, the walk's background is ``1 − saliency``
            (true) or the constant ``background`` (false: P-NOC's code, 0.30, where the
            saliency only shapes the affinity labels).
        crf: Label CRF on the pseudo masks (P-NOC's: 1 iteration, gt_prob 0.9).
        exp_times: The walk takes ``2**exp_times`` steps (IRN: 8).
        pad_to: Images are padded to this size for the boundary map (IRN: 512, its crop).
        batch_size: Images walked together (speed only).
        workers: Processes running the CRF of the affinity labels (0: in the pipeline's own).
        preset: Training preset of the boundary network (``synth-boundary``, ``voc12-boundary``).
        epochs: Boundary-network epochs (None: the preset's).
    """

    methods: tuple[str, ...] = ()
    boundary: Literal["per_method", "shared"] = "per_method"
    affinity: Literal["auto", "irn", "lpcam"] = "auto"
    affinity_crf: bool = True
    background: float | str = "auto"
    saliency: str | None = None
    saliency_background: bool = True
    crf: bool = False
    exp_times: int = 8
    pad_to: int | None = 512
    batch_size: int = neutral(16)
    workers: int = neutral(0)
    preset: str = "synth-boundary"
    epochs: int | None = None

    def __post_init__(self) -> None:
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"refine.methods lists a method twice: {list(self.methods)}")
        if isinstance(self.background, str) and self.background not in _BACKGROUNDS:
            try:
                self.background = float(self.background)
            except ValueError:
                raise ConfigError(
                    "refine.background must be auto, irn, pnoc, lpcam or a number in [0, 1], "
                    f"got {self.background!r}"
                ) from None
        if not isinstance(self.background, str):
            check_threshold(self.background, "refine.background")
        for name in ("exp_times", "batch_size", "workers"):
            if getattr(self, name) < (1 if name == "batch_size" else 0):
                raise ConfigError(f"refine.{name} is out of range: {getattr(self, name)}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"refine.epochs must be at least 1, got {self.epochs}")

    def affinity_preset(self, method: str) -> str:
        """The threshold preset of ``method``'s affinity labels."""
        if self.affinity != "auto":
            return self.affinity
        return "lpcam" if method.startswith("lpcam") else "irn"

    def background_for(self, method: str) -> float | str:
        """The constant background of ``method``'s pseudo masks (a preset name or a number)."""
        if self.background == "auto":
            return "lpcam" if method.startswith("lpcam") else "irn"
        return self.background
