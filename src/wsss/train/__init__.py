"""Training: the engine (loop, AMP, accumulation, DDP, resume), strategies and optimisation."""

from wsss.train.engine import Trainer, train
from wsss.train.strategies import STRATEGIES, Phase, StepContext, Strategy

__all__ = [
    "STRATEGIES",
    "Phase",
    "StepContext",
    "Strategy",
    "Trainer",
    "train",
]
