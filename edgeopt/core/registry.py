"""The technique registry: a config type and a recipe step name -> the handler.

A technique registers one handler for its config with ``@register(Config,
step="name")``; recipes find it by that name and ``run`` dispatches on the
config's type, so nothing here is edited for a new technique (DESIGN.md, seam
1). Handlers take ``(model, config, ctx: StepContext)`` and return a
``StepResult`` (core/step.py). ``edgeopt.compress`` imports every technique
module, which is what registers them: callers go through it (``compress.apply``,
``compress.run_step``), as it sits above core.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeopt.core.errors import ConfigError
from edgeopt.core.step import StepConfig, StepContext, StepRecord, StepResult

Handler = Callable[[Any, Any, StepContext], StepResult]


@dataclass(frozen=True)
class Entry:
    config: type
    handler: Handler
    step: str


_BY_TYPE: dict[type, Entry] = {}
_BY_STEP: dict[str, Entry] = {}


def register(config_type: type, *, step: str) -> Callable[[Handler], Handler]:
    """Register the decorated handler for ``config_type`` under the recipe key ``step``."""
    if not (isinstance(config_type, type) and issubclass(config_type, StepConfig)):
        raise TypeError(f"register({config_type!r}): a step's config must subclass StepConfig")
    taken = _BY_STEP.get(step)
    if taken is not None and taken.config is not config_type:
        raise ValueError(f"step {step!r} is already {taken.config.__name__}'s")

    def decorate(fn: Handler) -> Handler:
        entry = Entry(config_type, fn, step)
        _BY_TYPE[config_type] = _BY_STEP[step] = entry
        return fn

    return decorate


def entry_for(config: Any) -> Entry:
    """The config's own registration, else its nearest registered base class's."""
    for cls in type(config).__mro__:
        if cls in _BY_TYPE:
            return _BY_TYPE[cls]
    known = ", ".join(sorted(c.__name__ for c in _BY_TYPE))
    raise ConfigError(f"no technique handles {type(config).__name__} (known configs: {known})")


def handler_for(config: Any) -> Handler:
    return entry_for(config).handler


def step_name(config: Any) -> str:
    """The recipe key of a step's config."""
    return entry_for(config).step


def step_names() -> list[str]:
    return sorted(_BY_STEP)


def step_config(name: str, where: str = "") -> type:
    """The config class of the recipe step ``name``; one ``ConfigError`` line otherwise."""
    entry = _BY_STEP.get(name)
    if entry is None:
        raise ConfigError(f"{where}unknown step {name!r} (valid: {', '.join(step_names())})")
    return entry.config


def steps_taking(option: str) -> list[str]:
    """The steps whose config takes the run-level ``option`` (``StepConfig.overridable``)."""
    return [s for s in step_names() if option in _BY_STEP[s].config.overridable]


def run(model: Any, config: Any, ctx: StepContext) -> StepResult:
    """Apply one step; the result's model carries every step's record so far."""
    entry = entry_for(config)
    result = entry.handler(model, config, ctx)
    if not isinstance(result, StepResult):
        raise TypeError(f"the {entry.step} handler {entry.handler.__qualname__} returned "
                        f"{type(result).__name__}, not a StepResult")
    if not result.record.step:
        result.record.step = entry.step
    record_on(result.model, result.record, earlier=records(model))
    return result


def records(model: Any) -> dict[str, dict[str, Any]]:
    """The step records a model carries (``meta["edgeopt"][step]``), by step name."""
    info = (getattr(model, "meta", None) or {}).get("edgeopt") or {}
    return {k: v for k, v in info.items() if k in _BY_STEP}


def record_on(model: Any, record: StepRecord, *, earlier: dict[str, Any]) -> None:
    """Write ``record`` into ``model.meta["edgeopt"]`` under its step name, keeping the
    records of earlier steps: a handler that built a new model does not lose them,
    and no step writes over another's."""
    meta = getattr(model, "meta", None)
    if not isinstance(meta, dict):
        meta = {}
        model.meta = meta
    info = meta.setdefault("edgeopt", {})
    for step, rec in earlier.items():
        info.setdefault(step, copy.deepcopy(rec))
    info[record.step] = record.to_dict()
