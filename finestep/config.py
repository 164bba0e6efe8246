"""Configuration: dataclasses with defaults and help in one place, YAML files, dotted ``key=value`` overrides.

A config error names the key and what was expected, e.g. ``credit.gamma_p: expected a float, got 'abc'``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable
from typing import Any, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "apply_overrides",
    "check_range",
    "config_help",
    "format_config_help",
    "from_dict",
    "merge_overrides",
    "option",
    "parse_value",
    "to_dict",
]

C = TypeVar("C")


# YAML 1.1 (PyYAML) reads ``3e-5`` as a string: its floats need a dot and a signed exponent. Numbers in that
# everyday form are accepted where a float is expected.
_EXPONENT_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the dotted key."""


def parse_value(text: str) -> Any:
    """A command-line value as YAML (``0.5`` -> float, ``true`` -> bool, ``[a, b]`` -> list, else str)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{key}: expected one of {list(typing.get_args(annotation))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, prefix=f"{key}.")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, value_type = typing.get_args(annotation)
        return {k: _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        items = [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if annotation is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an integer too large for a float
            raise ConfigError(f"{key}: expected a finite number, got {value!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def check_range(
    owner: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    high_open: bool = False,
    low_open: bool = False,
) -> None:
    """Raise ``ValueError("name: must be ... got v")`` unless ``low <= owner.name <= high`` (``< high`` when
    ``high_open``, ``low <`` when ``low_open``); NaN fails, ``None`` passes. Meant for ``__post_init__``:
    :func:`from_dict` adds the section."""
    value = getattr(owner, name)
    if value is None:
        return
    too_high = high is not None and (value >= high if high_open else value > high)
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or too_high or (isinstance(value, float) and math.isnan(value)):
        if high is None:
            wanted = f"{'>' if low_open else '>='} {low:g}"
        elif low is None:
            wanted = f"{'<' if high_open else '<='} {high:g}"
        else:
            wanted = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name}: must be {wanted}, got {value!r}")


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build dataclass ``cls`` from a (nested) mapping, checking every key and type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key; expected one of {sorted(fields)}")
    values = {name: _coerce(value, hints[name], f"{prefix}{name}") for name, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        head = message.split(":", 1)[0]
        if head.split(".")[0] in fields and " " not in head:  # "field: ..." or "section.field: ...": dotted key
            raise ConfigError(f"{prefix}{message}") from None
        first_word = message.split(" ", 1)[0]
        if first_word in fields:  # "field must be ...": name the dotted key too
            raise ConfigError(f"{prefix}{first_word}: {message}") from None
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {message}") from None


def option(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its help text in ``metadata["help"]`` (what ``config_help`` prints)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help})


def config_help(cls: type, prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(dotted key, default, help)`` for every leaf field of dataclass ``cls``, sections expanded, in order.

    The help is the field's ``metadata["help"]`` (empty when it has none; a section's fields carry their own).
    """
    rows: list[tuple[str, Any, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        if dataclasses.is_dataclass(hints[f.name]):
            rows += config_help(hints[f.name], f"{key}.")
        else:
            rows.append((key, default, str(f.metadata.get("help", ""))))
    return rows


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False)
    return text.strip().removesuffix("\n...").strip()


def format_config_help(cls: type, width: int = 110) -> str:
    """Every key of dataclass config ``cls`` with its default and help, one aligned line each (help wrapped)."""
    import textwrap

    rows = [(key, _shown(default), text) for key, default, text in config_help(cls)]
    key_width = max(len(k) for k, _, _ in rows)
    value_width = min(12, max(len(v) for _, v, _ in rows))
    indent = key_width + value_width + 4
    lines = [f"{'key':<{key_width}}  {'default':<{value_width}}  help"]
    for key, value, text in rows:
        head = f"{key:<{key_width}}  {value:<{value_width}}  "
        if len(value) > value_width:  # a long default gets a line of its own
            lines.append(f"{key:<{key_width}}  {value}")
            head = " " * indent
        wrapped = textwrap.wrap(text, max(20, width - indent)) or [""]
        lines.append(head + wrapped[0])
        lines += [" " * indent + more for more in wrapped[1:]]
    return "\n".join(lines)


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain nested dicts (for YAML or JSON)."""
    return dataclasses.asdict(config)


def merge_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of the nested mapping ``data`` with dotted ``key=value`` overrides set (validated later)."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r}: expected key=value")
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts[: depth + 1])}: is a value, not a section")
            node = child
        node[parts[-1]] = parse_value(text)
    return data


def apply_overrides(config: C, overrides: Iterable[str]) -> C:
    """A copy of ``config`` with dotted ``key=value`` overrides applied (``rewards.weights.redundant=0``)."""
    return from_dict(type(config), merge_overrides(to_dict(config), overrides))
