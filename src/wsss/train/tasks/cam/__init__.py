"""The ``cam`` task and its strategies, registered by name in :data:`STRATEGIES`.

Adding a strategy is a module with a :class:`~wsss.train.tasks.cam.base.CAMTask` subclass
decorated with ``@STRATEGIES.register("name")``, imported below.
"""

from wsss.train.tasks.cam import occse, pnoc, poc, puzzle, vanilla
from wsss.train.tasks.cam.base import STRATEGIES, CAMTask  # the modules above register on import

__all__ = ["STRATEGIES", "CAMTask", "occse", "pnoc", "poc", "puzzle", "vanilla"]
