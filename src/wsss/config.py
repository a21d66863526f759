"""Typed configuration: dataclasses per stage, YAML presets and ``key=value`` overrides.

A configuration is a tree of dataclasses rooted at :class:`Config`. It is loaded from a preset
name (a YAML file shipped in ``wsss/configs/``) or a YAML path, then overridden by dotted
``section.field=value`` strings whose values are parsed as YAML and checked against the field
types. A preset may start from another with ``extends: <preset or path>``.

Adding a stage's settings is adding a dataclass field to :class:`Config`; loading, overrides,
validation and saving work for any nested dataclass.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from wsss.errors import ConfigError
from wsss.io.atomic import atomic_write_text
from wsss.runtime.provenance import write_run_info

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
    "list_presets",
    "load_config",
    "save_resolved",
]


@dataclass
class ModelConfig:
    """The CAM classifier.

    Attributes:
        backbone: Any timm model name with ``features_only`` support.
        num_classes: Foreground classes; None takes them from the training dataset.
        output_stride: 16 (layer4 dilated) or 8 (layer3 too).
        pretrained: Load ImageNet weights through timm (needs the network).
        weights: Local backbone weights file (safetensors/pth of the timm model); implies
            pretrained.
    """

    backbone: str = "resnet50"
    num_classes: int | None = None
    output_stride: int = 16
    pretrained: bool = False
    weights: str | None = None


@dataclass
class DataConfig:
    """Where the images come from and how training crops are made (METHODS.md §1).

    Attributes:
        root: Dataset root directory.
        format: Dataset reader name (``wsss.data.datasets``), e.g. ``voc``, ``coco``.
        split: Training split.
        val_split: Split for per-epoch validation, or None for none.
        crop_size: Square training crop; smaller images are padded (mean colour, mask 255).
        resize_long: The long side is resized to a random integer in ``[min, max]``.
        max_samples: Use only the first N training (and validation) images, for quick runs.
    """

    root: str | None = None
    format: str = "voc"
    split: str = "train_aug"
    val_split: str | None = "val"
    crop_size: int = 512
    resize_long: tuple[int, int] = (320, 640)
    max_samples: int | None = None


@dataclass
class AugmentConfig:
    """Optional augmentations on top of resize, flip and crop.

    Attributes:
        hflip: Random horizontal flip (p = 0.5).
        randaugment: torchvision RandAugment (2 ops, magnitude 10) plus a 16-px cutout.
        color_jitter: Colour jitter (0.3, 0.3, 0.3, 0.1).
        mixup_alpha: MixUp Beta(α, α) parameter; 0 disables.
        cutmix_alpha: CutMix Beta(α, α) parameter; 0 disables.
        mix_prob: Probability that a batch is mixed (MixUp or CutMix, chosen evenly when both).
    """

    hflip: bool = True
    randaugment: bool = False
    color_jitter: bool = False
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0


@dataclass
class TrainConfig:
    """The training loop (METHODS.md §1; defaults follow the P-NOC code for VOC).

    Attributes:
        task: Training task (``wsss.train.tasks.TASKS``): what is trained, on which targets.
            ``cam`` (a CAM classifier on image labels) runs the strategy ``strategy``.
        strategy: CAM training strategy (``wsss.train.tasks.cam.STRATEGIES``): ``vanilla``,
            ``puzzle``, ``occse``, ``poc`` or ``pnoc``.
        epochs: Passes over the training split.
        batch_size: Images per forward pass (per process under DDP).
        accumulate: Forward passes per optimiser step.
        accumulate_mode: ``mean`` averages the accumulated gradients; ``sum`` adds them like
            the reference code (its effective lr is ``accumulate`` times larger).
        lr: Base learning rate (pretrained weights); see ``lr_multipliers``.
        lr_multipliers: lr factors of the four parameter groups (pretrained weights,
            pretrained biases, new weights, new biases): 1, 2, 10, 20 in the papers.
        weight_decay: Weight decay of the weight groups (biases get none).
        norm_weight_group: Group of the norm layers' scales γ: ``weights`` (the P-NOC and
            Puzzle-CAM code: lr, weight decay) or ``biases`` (2·lr, no weight decay; the
            grouping of ``wsss`` before it followed the reference). Shifts β are biases.
        momentum: SGD momentum (the reference is effectively 0).
        nesterov: SGD with Nesterov momentum (needs ``momentum > 0``).
        optimizer: ``sgd`` (papers, pretrained backbones) or ``adamw`` (from-scratch demo).
        schedule: ``poly`` (``lr·(1−k/K)^power`` per optimiser step), ``onecycle`` or
            ``cosine`` (half a cosine to 0, after ``warmup_steps`` of linear warmup).
        poly_power: Exponent of the poly schedule.
        onecycle_pct: Fraction of the one-cycle schedule spent warming up.
        warmup_steps: Linear warmup steps of the ``cosine`` schedule (0: none).
        label_smoothing: ε of ``LS_ε(y) = (1−ε)·y + ε/2``.
        amp: Mixed precision on CUDA (ignored on CPU).
        amp_dtype: ``float16`` (with a gradient scaler) or ``bfloat16``.
        seed: Seed of python, numpy, torch and the data order.
        augment: Optional augmentations.
        num_workers: Data-loading worker processes.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        checkpoint_every: Also save the resumable state every N optimiser steps (0: per epoch).
        val_every: Validate every N epochs (0: never).
        select_by: Validation metric choosing ``best`` (e.g. ``val/f1``), or None.
        log_every: Write a metrics line every N optimiser steps (and print it when stderr is
            not a terminal or progress bars are off).
        tensorboard: Also log scalars to TensorBoard in ``RUN/tensorboard`` (needs the
            ``tensorboard`` extra: ``pip install wsss[tensorboard]``).
        strategy_args: Task- or strategy-specific options, checked against its own
            dataclass (e.g. ``oc`` for OC-CSE).
    """

    task: str = "cam"
    strategy: str = "vanilla"
    epochs: int = 15
    batch_size: int = 32
    accumulate: int = 1
    accumulate_mode: Literal["mean", "sum"] = "mean"
    lr: float = 0.1
    lr_multipliers: tuple[float, float, float, float] = (1.0, 2.0, 10.0, 20.0)
    weight_decay: float = 1e-4
    norm_weight_group: Literal["weights", "biases"] = "weights"
    momentum: float = 0.0
    nesterov: bool = False
    optimizer: Literal["sgd", "adamw"] = "sgd"
    schedule: Literal["poly", "onecycle", "cosine"] = "poly"
    poly_power: float = 0.9
    onecycle_pct: float = 0.25
    warmup_steps: int = 0
    label_smoothing: float = 0.0
    amp: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = 0
    device: str = "auto"
    checkpoint_every: int = 0
    val_every: int = 1
    select_by: str | None = None
    log_every: int = 10
    tensorboard: bool = False
    strategy_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    """The whole configuration of a run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass with type checking


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert lists to tuples and ints to floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of settings, got {value!r}")
        return _from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list like [a, b], got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return (
            [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
            if args
            else list(value)
        )
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # YAML reads names like 8 or 1e-3 as numbers
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported setting type {_type_name(tp)}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    types_ = _field_types(cls)
    unknown = [k for k in data if k not in types_]
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown setting {prefix}{unknown[0]}; valid keys"
            f"{' of ' + where if where else ''}: {', '.join(types_)}"
        )
    kwargs = {k: _coerce(v, types_[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build a :class:`Config` from nested dicts, checking every key and type."""
    return _from_dict(Config, data)


def dataclass_from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Build any settings dataclass ``cls`` from a dict, with the checks of :func:`load_config`.

    ``where`` prefixes the names in error messages (e.g. ``train.strategy_args``).
    """
    return _from_dict(cls, data, where)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dicts (tuples as lists), ready for YAML or JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(config)


# ---------------------------------------------------------------------------------------------
# overrides


def _valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys.extend(_valid_keys(tp, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _parse_value(text: str, tp: Any) -> Any:
    if tp is str or (
        typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp)
    ):
        # Keep strings verbatim (a path like ``01`` or ``1e-3``) unless they spell null.
        return None if text in ("null", "None", "~") and type(None) in typing.get_args(tp) else text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse value {text!r}: {e}") from None


def apply_overrides(config: Config, overrides: Iterable[str]) -> Config:
    """Return a copy of ``config`` with dotted ``key=value`` overrides applied.

    Values are YAML (``true``, ``0.01``, ``[320, 640]``, ``null``). Keys inside
    ``train.strategy_args`` are free-form; every other key must name a field.

    Raises:
        ConfigError: Malformed override, unknown key (the message lists the valid keys) or a
            value of the wrong type.
    """
    data = config_to_dict(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. train.lr=0.01)"
            )
        parts = key.split(".")
        cls: Any = Config
        node = data
        for i, part in enumerate(parts):
            path = ".".join(parts[: i + 1])
            if cls is None:  # inside a free-form dict (strategy_args)
                if i < len(parts) - 1:
                    node = node.setdefault(part, {})
                    if not isinstance(node, dict):
                        raise ConfigError(f"override {key}: {path} is not a mapping")
                else:
                    node[part] = _parse_value(text, Any)
                continue
            types_ = _field_types(cls)
            if part not in types_:
                raise ConfigError(
                    f"unknown setting {path!r} in override {item!r}; valid keys: "
                    + ", ".join(_valid_keys(Config))
                )
            tp = types_[part]
            if i == len(parts) - 1:
                if dataclasses.is_dataclass(tp):
                    raise ConfigError(f"override {key}: {path} is a section; set one of its keys")
                node[part] = _coerce(_parse_value(text, tp), tp, path)
            elif dataclasses.is_dataclass(tp):
                cls, node = tp, node[part]
            elif typing.get_origin(tp) is dict:
                cls, node = None, node[part]
            else:
                raise ConfigError(f"override {key}: {path} is not a section")
    return config_from_dict(data)


# ---------------------------------------------------------------------------------------------
# presets


def list_presets() -> list[str]:
    """Names of the presets shipped with the package."""
    folder = resources.files("wsss") / "configs"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(preset_or_path: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    path = Path(preset_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        resource = resources.files("wsss") / "configs" / f"{preset_or_path}.yaml"
        if not resource.is_file():
            raise ConfigError(
                f"unknown preset {str(preset_or_path)!r} (not a file either); presets: "
                + (", ".join(list_presets()) or "none")
            )
        text, source = resource.read_text(encoding="utf-8"), f"preset {preset_or_path}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if path.is_file() and not Path(str(parent)).is_absolute():
        sibling = path.parent / str(parent)
        if sibling.is_file():
            parent = sibling
    key = str(Path(parent).resolve()) if Path(str(parent)).is_file() else str(parent)
    here = str(path.resolve()) if path.is_file() else str(preset_or_path)
    if key in (*seen, here):
        raise ConfigError(f"{source}: circular 'extends: {parent}'")
    return _merge(_read_yaml(parent, (*seen, here)), data)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def load_config(preset_or_path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Load a preset (by name) or YAML file, then apply ``key=value`` overrides.

    Args:
        preset_or_path: Preset name (see :func:`list_presets`), a YAML path, or None for
            the defaults.
        overrides: Dotted ``section.key=value`` strings, applied in order.

    Raises:
        ConfigError: Unknown preset, unreadable YAML, unknown key or wrong type; the message
            names the setting.
    """
    data = {} if preset_or_path is None else _read_yaml(preset_or_path)
    return apply_overrides(config_from_dict(data), overrides)


def save_resolved(
    config: Config, run_dir: str | Path, extra: Mapping[str, Any] | None = None
) -> None:
    """Write ``config.yaml`` (loadable by :func:`load_config`) and ``run_info.json``.

    ``run_info.json`` records library versions, the platform, the seed and ``extra``
    (e.g. the command line, the world size).
    """
    run_dir = Path(run_dir)
    atomic_write_text(
        run_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False)
    )
    write_run_info(run_dir, seeds={"train": config.train.seed}, extra=extra)
