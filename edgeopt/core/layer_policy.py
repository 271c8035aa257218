"""One per-layer policy for every technique config: ``layers: {glob: {field: value}}``.

An entry overrides fields of the same config for the layers its glob covers
(``core.config.matches``: the name, or a container it names); the first matching
pattern wins, so specific patterns go before ``"*"``. ``skip: true`` leaves the layer
alone. Each config declares which of its fields a layer may set (not every field
means something per layer: a per-layer ``calib_size`` would be silently ignored),
plus short aliases into a nested spec (quantize's ``bits`` -> ``weights.bits``)::

    policy: ClassVar[LayerPolicy] = LayerPolicy("cluster", fields=("clusters",))

    def __post_init__(self):
        ...                      # the config's own checks first
        self.policy.check(self)  # then every entry, as the config it resolves to

Every entry is checked when the config is built, by building the config it resolves
to: the config's own ``__post_init__`` checks a per-layer value exactly as it checks
the global one, and the error names the pattern.
"""

from __future__ import annotations

import contextvars
import dataclasses
import types
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeopt.core.config import Config, _coerce, first_match, warn_unmatched
from edgeopt.core.errors import ConfigError

SKIP = "skip"  # every policy's key for "leave this layer alone"

# Set while a per-layer config is built: its __post_init__ must not check (and build)
# the layers again, which would recurse.
_resolving: contextvars.ContextVar[bool] = contextvars.ContextVar("_resolving", default=False)


@dataclass(frozen=True)
class LayerPolicy:
    """What ``layers`` entries of one config may say, and how they resolve.

    ``where``: the step name that prefixes messages. ``fields``: the config's fields a
    layer may set. ``aliases``: short key -> (field, attribute of that field's spec).
    ``null_skips``: fields whose ``null`` in an entry means skip (cluster's
    ``clusters: null``)."""

    where: str
    fields: tuple[str, ...]
    aliases: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    null_skips: tuple[str, ...] = ()

    @property
    def keys(self) -> list[str]:
        return sorted({*self.fields, *self.aliases, SKIP})

    # ----------------------------------------------------------------- construction

    def check(self, config: Any) -> None:
        """Validate and coerce ``config.layers`` in place (frozen: ``object.__setattr__``)
        and build the config each pattern resolves to. Call last in ``__post_init__``."""
        if _resolving.get():
            return
        layers = config.layers
        if not isinstance(layers, dict):
            raise ConfigError(f"{self.where}.layers must be a mapping of glob -> "
                              f"{{field: value}}, got {layers!r}")
        hints = typing.get_type_hints(type(config))
        normal: dict[str, dict[str, Any]] = {}
        built: dict[str, Any] = {}
        for pattern, entry in layers.items():
            at = f"{self.where}.layers[{pattern!r}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{at} must be a mapping of fields ({', '.join(self.keys)}), "
                                  f"got {entry!r}")
            entry = {k: self._coerce(config, hints, k, v, at) for k, v in entry.items()}
            normal[pattern] = entry
            built[pattern] = None if self._skips(entry) else self._build(config, entry, at)
        object.__setattr__(config, "layers", normal)
        object.__setattr__(config, "_layer_configs", built)

    def _coerce(self, config: Any, hints: dict[str, Any], key: str, value: Any,
                at: str) -> Any:
        if key not in self.keys:
            raise ConfigError(f"{at}: unknown key {key!r} (valid: {', '.join(self.keys)})")
        if key == SKIP:
            if not isinstance(value, bool):
                raise ConfigError(f"{at}: skip must be true or false, got {value!r}")
            return value
        if key in self.aliases:
            name, attr = self.aliases[key]
            tp = typing.get_type_hints(type(getattr(config, name)))[attr]
        else:
            name, tp = key, hints[key]
        if value is None:
            if key in self.null_skips or _admits_none(tp):
                return None
            raise ConfigError(f"{at}: {key} cannot be null")
        if isinstance(value, dict) and _is_config(tp):
            # A nested spec given as a mapping changes those attributes of the config's
            # own spec (as the aliases do), not a spec rebuilt from class defaults.
            sub = typing.get_type_hints(tp)
            unknown = sorted(set(value) - set(sub))
            if unknown:
                raise ConfigError(f"{at}.{key}: unknown key {unknown[0]!r} "
                                  f"(valid: {', '.join(sorted(sub))})")
            return {k: _coerce(sub[k], v, f"{at}.{key}.{k}") for k, v in value.items()}
        return _coerce(tp, value, f"{at}.{key}")

    def _skips(self, entry: dict[str, Any]) -> bool:
        return bool(entry.get(SKIP)) or any(k in entry and entry[k] is None
                                            for k in self.null_skips)

    def _build(self, config: Any, entry: dict[str, Any], at: str) -> Any:
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in entry.items():
            if key == SKIP:
                continue
            if key in self.aliases:
                name, attr = self.aliases[key]
                nested.setdefault(name, {})[attr] = value
            elif isinstance(value, dict) and isinstance(getattr(config, key), Config):
                nested.setdefault(key, {}).update(value)
            else:
                top[key] = value
        token = _resolving.set(True)
        try:
            for name, changes in nested.items():
                top[name] = dataclasses.replace(getattr(config, name), **changes)
            return dataclasses.replace(config, **top)
        except ConfigError as exc:
            # "cluster.clusters must be ..." -> "cluster.layers['fc']: clusters must be ..."
            message = str(exc).removeprefix(f"{self.where}.").removeprefix(f"{self.where}: ")
            raise ConfigError(f"{at}: {message}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{at}: {exc}") from None
        finally:
            _resolving.reset(token)

    # ----------------------------------------------------------------- lookup

    def resolve(self, config: Any, name: str) -> Any | None:
        """The config as layer ``name`` sees it: the first matching entry's fields
        replaced (``config`` itself when none matches), or None when it is skipped."""
        pattern = first_match(name, config.layers)
        if pattern is None:
            return config
        built = getattr(config, "_layer_configs", None)
        if built is None or pattern not in built:  # e.g. a config built while resolving
            self.check(config)
            built = config._layer_configs
        return built[pattern]

    def warn_unmatched(self, config: Any, names: list[str]) -> None:
        """The step's one warning per pattern that matches none of ``names``."""
        warn_unmatched(config.layers, names, f"{self.where}: ")

    # ----------------------------------------------------------------- old spellings

    def from_scalars(self, layers: Any, key: str) -> Any:
        """``{glob: value}`` (the spelling before this policy) -> ``{glob: {key: value}}``,
        ``null`` -> ``{skip: true}``, with one DeprecationWarning showing the new form.
        Anything that is not a mapping of scalars is returned as it is, for ``check``."""
        if not isinstance(layers, dict) or all(isinstance(v, dict) for v in layers.values()):
            return layers
        new = {p: v if isinstance(v, dict) else {SKIP: True} if v is None else {key: v}
               for p, v in layers.items()}
        deprecated(self.where, f"layers: {flow(layers)}", f"layers: {flow(new)}")
        return new


def deprecated(where: str, old: str, new: str) -> None:
    """The one line an old spelling gets: still read for this release, with the new one."""
    # stacklevel 5: past this, the policy method, __post_init__ and the dataclass __init__.
    warnings.warn(f"{where}: `{old}` is deprecated and will be refused in the next release; "
                  f"write `{new}`", DeprecationWarning, stacklevel=5)


def flow(value: Any) -> str:
    """``value`` as one line of YAML flow style, to quote a spelling in a message."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_scalar(k)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    return _scalar(value)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        plain = value.replace("_", "").replace(".", "").isalnum() and not value[0].isdigit()
        return value if plain else f'"{value}"'
    return str(getattr(value, "value", value))


def _admits_none(tp: Any) -> bool:
    return (typing.get_origin(tp) in (typing.Union, types.UnionType)
            and type(None) in typing.get_args(tp)) or tp is Any


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Config)
