"""Training tasks, registered by name in :data:`TASKS` (``train.task``).

A task builds its networks, training samples, losses, validation and export; the engine runs
it (see :mod:`wsss.train.tasks.base` for the contract). Adding one is a module with a
:class:`~wsss.train.tasks.base.Task` subclass decorated with ``@TASKS.register("name")``,
imported below (the ``cam`` package registers ``cam``, :mod:`.boundary` ``boundary``,
:mod:`.segmentation` ``segmentation``, ``saliency`` ``ccam`` and ``saliency_detector``).
"""

from wsss.config import Config
from wsss.errors import ConfigError
from wsss.train.tasks import boundary, cam, saliency, segmentation
from wsss.train.tasks.base import TASKS, LossOutput, NoArgs, Phase, StepContext, Task
from wsss.train.tasks.cam import STRATEGIES, CAMTask
from wsss.train.tasks.segmentation import SegmentationTask

__all__ = [
    "STRATEGIES",
    "TASKS",
    "CAMTask",
    "LossOutput",
    "NoArgs",
    "Phase",
    "SegmentationTask",
    "StepContext",
    "Task",
    "boundary",
    "cam",
    "resolve_task",
    "saliency",
    "segmentation",
]


def resolve_task(config: Config) -> type[Task]:
    """The task class ``config`` selects: ``train.task``, then its variant (CAM: the strategy).

    Raises:
        ConfigError: Unknown task or strategy.
    """
    try:
        task = TASKS.get(config.train.task)
    except KeyError as e:
        raise ConfigError(f"train.task: {e.args[0]}") from None
    return task.resolve(config)
