"""Config base class: typed dataclasses that round-trip to plain dicts/YAML.

Subclasses are ``@dataclass(frozen=True, kw_only=True)``; choices are ``str``
Enums; validation lives in ``__post_init__`` and raises ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import types
import typing
import warnings
from collections.abc import Iterable
from typing import Any, TypeVar

from edgeopt.core.errors import ConfigError, first_line

T = TypeVar("T", bound="Config")


def _to_plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


def enum_value(enum_type: type[enum.Enum], value: Any, where: str) -> enum.Enum:
    try:
        return enum_type(value)
    except ValueError:
        valid = ", ".join(m.value for m in enum_type)
        raise ConfigError(f"{where}: unknown value {value!r} (valid: {valid})") from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Turn a plain YAML value into the field's declared type."""
    origin = typing.get_origin(tp)
    if value is None:
        # YAML's `bits:` (no value) is null: only a field that may be None takes it; any
        # other would reach __post_init__ as None and fail there with a TypeError.
        if tp is Any or (origin in (typing.Union, types.UnionType)
                         and type(None) in typing.get_args(tp)):
            return None
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got null")
    if origin in (typing.Union, types.UnionType):
        last_error: ConfigError | None = None
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except (ConfigError, TypeError, ValueError) as exc:
                last_error = exc if isinstance(exc, ConfigError) else ConfigError(str(exc))
        raise last_error or ConfigError(f"{where}: bad value {value!r}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return enum_value(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, Config):
        return tp.from_dict(value) if isinstance(value, dict) else value
    if origin is tuple:
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        if isinstance(value, (str, int, float)):
            # YAML's `ignore: fc` means the one-item list, not the characters of "fc".
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(inner, v, where) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            # A ConfigError (not AttributeError) lets a Union try its next member.
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp) or (Any, Any)
        return {k: _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads 1e-4 (no dot) as a string.
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp)


def matches(name: str, pattern: str) -> bool:
    """Whether a glob pattern covers a layer's qualified name: the name itself, or a
    container it names (``layer3.conv2`` covers ``layer3.conv2.0``).

    The one matching rule of every per-layer option (``layers``, ``ignore``, ``skip``).
    Leaves often sit inside containers users know by name (a conv_bn Sequential, a
    torchvision ConvBNReLU): the pattern they read in ``print(model)`` should reach the
    conv inside, not silently match nothing. Only children are added, never siblings:
    ``fc`` covers ``fc.0`` but not ``fc2``."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def first_match(name: str, patterns: Iterable[str]) -> str | None:
    """The first glob pattern that covers a layer's qualified name (``matches``), or
    None: how every per-layer override is looked up (DESIGN.md, seam 2)."""
    for pattern in patterns:
        if matches(name, pattern):
            return pattern
    return None


def warn_unmatched(patterns: Iterable[str], names: list[str], where: str = "") -> None:
    """One warning line per pattern that matches no layer, listing the layer names: a
    typo in an override should not pass silently, nor stop the run."""
    for pattern in patterns:
        if not any(matches(n, pattern) for n in names):
            # stacklevel 4: the caller of the config method that called this.
            warnings.warn(f"{where}layer pattern {pattern!r} matches no layer; layers are: "
                          f"{', '.join(names)}", stacklevel=4)


def enum_field(config: Any, name: str, enum_type: type[enum.Enum], where: str) -> None:
    """Coerce the frozen dataclass field ``name`` of ``config`` (given as a plain string
    when the config is built directly) to ``enum_type``, in ``__post_init__``; one
    ``ConfigError`` line naming ``where`` and the valid values otherwise."""
    value = getattr(config, name)
    if isinstance(value, enum_type):
        return
    object.__setattr__(config, name, enum_value(enum_type, value, where))


class Config:
    """Mixin for config dataclasses: ``to_dict``/``from_dict`` and ``replace``."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {data!r}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown option {unknown[0]!r} (valid: {', '.join(sorted(names))})"
            )
        kwargs = {k: _coerce(hints[k], v, f"{cls.__name__}.{k}") for k, v in data.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            # A value of the declared type can still fail a __post_init__ check written for
            # sane ones (a list where it compares numbers): one line, not a traceback.
            raise ConfigError(f"{cls.__name__}: {first_line(exc)}") from None

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)
