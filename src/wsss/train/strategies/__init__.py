"""Training strategies, registered by name in :data:`STRATEGIES`.

Adding one is a module with a :class:`~wsss.train.strategies.base.Strategy` subclass decorated
with ``@STRATEGIES.register("name")``, imported below.
"""

from wsss.registry import Registry
from wsss.train.strategies.base import LossOutput, NoArgs, Phase, StepContext, Strategy

STRATEGIES: Registry[type[Strategy]] = Registry("training strategy")

from wsss.train.strategies import vanilla  # noqa: E402  (registers itself)

__all__ = ["STRATEGIES", "LossOutput", "NoArgs", "Phase", "StepContext", "Strategy", "vanilla"]
