"""wsss: weakly-supervised semantic segmentation, image-level labels in, pixel masks out.

The public API, imported lazily so that ``import wsss`` stays cheap and inference code never
loads the training package::

    import wsss
    model = wsss.create_model("cam_classifier", backbone="resnet50", num_classes=20)
    model, meta = wsss.load_model("runs/voc-cam")            # any registered kind
    dataset = wsss.build_dataset("voc", "VOC2012", "train")
    wsss.run_maps("cam", model, dataset, "runs/voc-cam/maps/cam")
    scores = wsss.run_evaluation(dataset, maps_dir="runs/voc-cam/maps/cam", threshold=0.3)
    wsss.run_pipeline("runs/full", wsss.run_config("synth-full"))   # a whole preset

Stage functions are named ``run_*`` because ``wsss.train``, ``wsss.maps`` and
``wsss.evaluate`` are the packages that implement them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "create_model": "wsss.models.registry",
    "load_model": "wsss.models.registry",
    "save_model": "wsss.models.registry",
    "list_models": "wsss.models.registry",
    "build_dataset": "wsss.data.datasets",
    "load_config": "wsss.config",
    "run_training": ("wsss.train.engine", "train"),
    "run_maps": "wsss.maps.runner",
    "run_evaluation": ("wsss.evaluate.runner", "evaluate"),
    "MapStore": "wsss.io.maps",
    "MaskStore": "wsss.io.masks",
    "run_config": "wsss.pipeline.runner",
    "run_pipeline": "wsss.pipeline.runner",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'wsss' has no attribute {name!r}")
    module, attribute = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
