"""Training: the engine (loop, AMP, accumulation, DDP, resume), tasks and optimisation."""

from wsss.train.engine import Trainer, TrainingInterrupted, train
from wsss.train.tasks import STRATEGIES, TASKS, CAMTask, Phase, StepContext, Task

# The CAM tasks' original name.
Strategy = CAMTask

__all__ = [
    "STRATEGIES",
    "TASKS",
    "CAMTask",
    "Phase",
    "StepContext",
    "Strategy",
    "Task",
    "Trainer",
    "TrainingInterrupted",
    "train",
]
