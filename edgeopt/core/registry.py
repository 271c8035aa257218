"""The technique registry: a config type -> the handler that applies it.

A technique adds a config dataclass and registers one handler; nothing here is
edited for it (DESIGN.md, seam 1). ``edgeopt.compress.apply`` dispatches through it:
it lives there, above core, because only importing the technique packages registers
their handlers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeopt.core.errors import ConfigError

_HANDLERS: dict[type, Callable[..., Any]] = {}


def register(config_type: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        _HANDLERS[config_type] = fn
        return fn

    return decorate


def handler_for(config: Any) -> Callable[..., Any]:
    for cls in type(config).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    known = ", ".join(sorted(c.__name__ for c in _HANDLERS))
    raise ConfigError(f"no technique handles {type(config).__name__} (known configs: {known})")

