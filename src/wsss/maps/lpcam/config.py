"""Settings of LPCAM prototype fitting (METHODS.md §5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wsss.errors import ConfigError

__all__ = ["PrototypeConfig"]


@dataclass
class PrototypeConfig:
    """Settings of :func:`fit_prototypes`; defaults follow the LPCAM code on VOC.

    Attributes:
        k: Clusters per set (VOC 12, COCO 20).
        tau: CAM threshold splitting foreground (``> tau``) from context (``< tau``).
        mu_f: Class prototypes need ``P[:, n] > mu_f``.
        mu_b: Context prototypes need ``mu_low < P[:, n] < mu_b`` (COCO 0.5).
        mu_low: Lower bound of context scores (COCO 0).
        per_class: Images sampled per class; None uses every image of the class.
        replace: Sample with replacement (COCO reference: 100 per class, seed 666).
        seed: Seed of image sampling, subsampling and k-means.
        init: k-means initialisation, ``"random"`` (reference) or ``"k-means++"``.
        update: k-means centre update, ``"reference"`` (raw mean) or ``"normalized"``.
        stop: k-means stopping rule, ``"reference"`` (``(Σ‖Δc‖)² < tol``) or ``"shift"``.
        tol: Tolerance of ``stop`` (reference: 5). The reference rule is in feature units:
            5 suits ResNet-50 layer-4 features, while small-norm features (an untrained or
            another backbone) can stop it after one iteration; ``stop="shift"`` (on unit
            centres, e.g. ``tol=1e-4``) is scale free.
        max_iter: k-means iteration cap (the reference has none).
        max_features: Cap on the features kept per set (uniform reservoir sample, seeded);
            None keeps all.
        classes_per_pass: Classes whose sets are collected in one pass over the images;
            None collects all classes in one pass (each image's features computed once).
    """

    k: int = 12
    tau: float = 0.1
    mu_f: float = 0.9
    mu_b: float = 0.9
    mu_low: float = 0.05
    per_class: int | None = None
    replace: bool = False
    seed: int = 0
    init: Literal["random", "k-means++"] = "random"
    update: Literal["reference", "normalized"] = "reference"
    stop: Literal["reference", "shift"] = "reference"
    tol: float = 5.0
    max_iter: int = 100
    max_features: int | None = None
    classes_per_pass: int | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"lpcam k must be >= 1, got {self.k}")
        if not 0.0 <= self.mu_low < self.mu_b <= 1.0 or not 0.0 <= self.mu_f <= 1.0:
            raise ConfigError(
                f"lpcam thresholds need 0 <= mu_low < mu_b <= 1 and 0 <= mu_f <= 1, got "
                f"mu_f={self.mu_f}, mu_b={self.mu_b}, mu_low={self.mu_low}"
            )
        choices = {
            "init": ("random", "k-means++"),
            "update": ("reference", "normalized"),
            "stop": ("reference", "shift"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"lpcam {name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        for name in ("per_class", "max_features", "classes_per_pass"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"lpcam {name} must be >= 1 or None, got {value}")
