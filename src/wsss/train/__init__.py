"""Classifier training: the engine, strategies, checkpoints and optimisation helpers."""

from wsss.train.checkpoint import load_classifier, save_classifier
from wsss.train.engine import Trainer, train
from wsss.train.strategies import STRATEGIES, Phase, StepContext, Strategy

__all__ = [
    "STRATEGIES",
    "Phase",
    "StepContext",
    "Strategy",
    "Trainer",
    "load_classifier",
    "save_classifier",
    "train",
]
