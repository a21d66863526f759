"""Training strategies, registered by name in :data:`STRATEGIES`.

Adding one is a module with a :class:`~wsss.train.strategies.base.Strategy` subclass decorated
with ``@STRATEGIES.register("name")``, imported below.
"""

from wsss.registry import Registry
from wsss.train.strategies.base import LossOutput, NoArgs, Phase, StepContext, Strategy

STRATEGIES: Registry[type[Strategy]] = Registry("training strategy")

# Each module registers its strategies on import.
from wsss.train.strategies import occse, pnoc, poc, puzzle, vanilla  # noqa: E402

__all__ = [
    "STRATEGIES",
    "LossOutput",
    "NoArgs",
    "Phase",
    "StepContext",
    "Strategy",
    "occse",
    "pnoc",
    "poc",
    "puzzle",
    "vanilla",
]
