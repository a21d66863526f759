"""Typed settings for any root dataclass: dicts, YAML presets, ``key=value`` overrides.

A configuration is a tree of dataclasses. It is loaded from a preset name (a YAML file shipped
in ``wsss/configs/``) or a YAML path, then overridden by dotted ``section.field=value`` strings
whose values are parsed as YAML and checked against the field types. A preset may start from
another with ``extends: <preset or path>``. Every root (the training :class:`~wsss.config.Config`,
the pipeline, the synthetic benchmark, the LPCAM prototypes) goes through these functions.

A field declared with :func:`neutral` does not change what a run computes (a device, a worker
count, a logging period): :func:`result_params` leaves it out, so changing it neither reruns a
pipeline stage nor blocks resuming a training run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from wsss.errors import ConfigError

__all__ = [
    "apply_overrides",
    "config_to_dict",
    "dataclass_from_dict",
    "diff_settings",
    "flatten",
    "list_presets",
    "load_config",
    "neutral",
    "neutral_keys",
    "override_key",
    "read_preset",
    "result_params",
    "valid_keys",
]

NEUTRAL = "wsss.neutral"
Override = str | tuple[str, Any]


def neutral(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING):
    """A dataclass field that does not change the result (left out of :func:`result_params`)."""
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={NEUTRAL: True}
    )


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
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


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
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a __post_init__ check that is not a ConfigError
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def dataclass_from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Build the settings dataclass ``cls`` from nested dicts, checking every key and type.

    ``where`` prefixes the names in error messages (e.g. ``train.strategy_args``).
    """
    return _from_dict(cls, data, where)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dicts (tuples as lists, paths as strings), ready for YAML or JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(config)


# ---------------------------------------------------------------------------------------------
# result-neutral settings and differences


def neutral_keys(cls: type, prefix: str = "") -> frozenset[str]:
    """Dotted names of the fields of ``cls`` (recursively) declared with :func:`neutral`."""
    keys: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get(NEUTRAL):
            keys.add(f"{prefix}{f.name}")
        elif dataclasses.is_dataclass(hints[f.name]):
            keys |= neutral_keys(hints[f.name], f"{prefix}{f.name}.")
    return frozenset(keys)


def result_params(config: Any) -> dict[str, Any]:
    """:func:`config_to_dict` without the :func:`neutral` fields: what determines the result."""
    doc = config_to_dict(config)
    for key in neutral_keys(type(config)):
        *path, last = key.split(".")
        node = doc
        for part in path:
            node = node[part]
        node.pop(last, None)
    return doc


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists are values, empty mappings are kept)."""
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def diff_settings(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = ()
) -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ between two nested dicts, as ``(key, old, new)``.

    A key missing on one side shows as None there; keys in ``ignore`` (and below them) are
    left out.
    """
    a, b = flatten(old), flatten(new)
    skip = tuple(ignore)
    return [
        (k, a.get(k), b.get(k))
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k) and not any(k == s or k.startswith(f"{s}.") for s in skip)
    ]


# ---------------------------------------------------------------------------------------------
# overrides


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable dotted key of ``cls`` (free-form dict fields end the path)."""
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys.extend(valid_keys(tp, f"{prefix}{name}."))
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


def _split(item: Override) -> tuple[str, Any, bool]:
    """``(key, value, whether value is text to parse)`` of one override."""
    if isinstance(item, tuple):
        key, value = item
        return str(key).strip(), value, False
    key, sep, text = str(item).partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.lr=0.01)")
    return key, text, True


def override_key(item: Override) -> str:
    """The dotted key an override sets (``"train.lr=0.1"`` → ``"train.lr"``)."""
    return (item[0] if isinstance(item, tuple) else str(item).partition("=")[0]).strip()


def apply_overrides(config: Any, overrides: Iterable[Override], section: str | None = None) -> Any:
    """Return a copy of the dataclass ``config`` with dotted overrides applied.

    Each override is ``"key=value"`` (the value is YAML: ``true``, ``0.01``, ``[320, 640]``,
    ``null``) or a ``(key, value)`` pair holding a Python value. Keys inside a free-form
    ``dict`` field (``train.strategy_args``) are free; every other key must name a field. With
    ``section``, a key may start with ``<section>.`` (``synth.train=10`` on the synthetic
    benchmark's own settings), so that keys read the same as in the pipeline configuration. A
    root class may rename keys with a ``RENAMED`` class attribute mapping old to new names.

    Raises:
        ConfigError: Malformed override, unknown key (the message lists the valid keys) or a
            value of the wrong type.
    """
    root = type(config)
    renamed: Mapping[str, str] = getattr(root, "RENAMED", {})
    data = config_to_dict(config)
    for item in overrides:
        key, value, is_text = _split(item)
        if section and key.startswith(f"{section}."):
            key = key[len(section) + 1 :]
        key = renamed.get(key, key)
        parts = key.split(".")
        cls: Any = root
        node = data
        for i, part in enumerate(parts):
            path = ".".join(parts[: i + 1])
            if cls is None:  # inside a free-form dict (strategy_args)
                if i < len(parts) - 1:
                    node = node.setdefault(part, {})
                    if not isinstance(node, dict):
                        raise ConfigError(f"override {key}: {path} is not a mapping")
                else:
                    node[part] = _parse_value(value, Any) if is_text else value
                continue
            types_ = _field_types(cls)
            if part not in types_:
                raise ConfigError(
                    f"unknown setting {path!r} in override {_show(item)}; valid keys: "
                    + ", ".join(valid_keys(root))
                )
            tp = types_[part]
            if i == len(parts) - 1:
                if dataclasses.is_dataclass(tp):
                    raise ConfigError(f"override {key}: {path} is a section; set one of its keys")
                parsed = _parse_value(value, tp) if is_text else value
                node[part] = config_to_dict(_coerce(parsed, tp, path))
            elif dataclasses.is_dataclass(tp):
                cls, node = tp, node[part]
            elif typing.get_origin(tp) is dict:
                cls, node = None, node[part]
            else:
                raise ConfigError(f"override {key}: {path} is not a section")
    return _from_dict(root, data)


def _show(item: Override) -> str:
    return repr(item if isinstance(item, str) else f"{item[0]}={item[1]!r}")


# ---------------------------------------------------------------------------------------------
# presets


def list_presets() -> list[str]:
    """Names of the presets shipped with the package."""
    folder = resources.files("wsss") / "configs"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_preset(preset_or_path: str | Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The nested dict of a preset name or YAML file, its ``extends`` chain merged in."""
    path = Path(preset_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path}: unreadable ({e})") from None
        source = str(path)
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
    return _merge(read_preset(parent, (*seen, here)), data)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    preset_or_path: str | Path | None = None,
    overrides: Iterable[Override] = (),
    *,
    cls: type | None = None,
    section: str | None = None,
) -> Any:
    """Load a preset (by name) or YAML file into ``cls``, then apply overrides.

    Args:
        preset_or_path: Preset name (see :func:`list_presets`), a YAML path, or None for
            the defaults of ``cls``.
        overrides: Dotted ``key=value`` strings or ``(key, value)`` pairs, applied in order
            (see :func:`apply_overrides`).
        cls: The root dataclass (default: the training :class:`~wsss.config.Config`).
        section: Optional key prefix accepted by the overrides (see :func:`apply_overrides`).

    Raises:
        ConfigError: Unknown preset, unreadable YAML, unknown key or wrong type; the message
            names the setting.
    """
    if cls is None:
        from wsss.config.training import Config

        cls = Config
    data = {} if preset_or_path is None else read_preset(preset_or_path)
    return apply_overrides(_from_dict(cls, data), overrides, section)
