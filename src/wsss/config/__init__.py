"""Typed configuration: dataclasses, YAML presets and ``key=value`` overrides for every root.

>>> from wsss.config import load_config
>>> config = load_config("voc12-cam", ["train.lr=0.01", "data.root=VOC2012"])

:mod:`wsss.config.core` holds the machinery (any dataclass root, presets, overrides,
result-neutral fields); :mod:`wsss.config.training` the training configuration :class:`Config`.
The pipeline's root (:class:`wsss.pipeline.PipelineConfig`) adds a section per stage on top.
"""

from wsss.config.core import (
    apply_overrides,
    config_to_dict,
    dataclass_from_dict,
    diff_settings,
    flatten,
    list_presets,
    load_config,
    neutral,
    neutral_keys,
    read_preset,
    result_params,
    valid_keys,
)
from wsss.config.training import (
    AugmentConfig,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    save_resolved,
)

__all__ = [
    "AugmentConfig",
    "Config",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "dataclass_from_dict",
    "diff_settings",
    "flatten",
    "list_presets",
    "load_config",
    "neutral",
    "neutral_keys",
    "read_preset",
    "result_params",
    "save_resolved",
    "valid_keys",
]
