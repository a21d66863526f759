"""The CAM training strategies under their original import path.

The strategies are the variants of the ``cam`` task (:mod:`wsss.train.tasks.cam`);
``Strategy`` is :class:`~wsss.train.tasks.cam.base.CAMTask`.
"""

from wsss.train.tasks.base import LossOutput, NoArgs, Phase, StepContext
from wsss.train.tasks.cam import STRATEGIES
from wsss.train.tasks.cam.base import CAMTask as Strategy

__all__ = ["STRATEGIES", "LossOutput", "NoArgs", "Phase", "StepContext", "Strategy"]
