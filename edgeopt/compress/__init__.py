"""Compression techniques; importing this package registers their handlers.

Every module under ``edgeopt/compress`` is imported here, so a technique added
as a new file (a config and a ``@register(Config, step="name")`` handler) is a
recipe step without editing this or any other file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from edgeopt.core.registry import run
from edgeopt.core.registry import run as run_step  # apply one technique with a full context
from edgeopt.core.sizing import SizeModel, default_size_model
from edgeopt.core.step import StepContext
from edgeopt.core.train import TrainData


def context_for(data: Any = None, *, progress: bool = True,
                size_model: SizeModel | None = None) -> StepContext:
    """The context ``apply`` builds from one ``data`` argument: ``TrainData`` is
    training data, anything else calibration inputs."""
    size_model = size_model or default_size_model()
    if isinstance(data, TrainData):
        return StepContext(train=data, size_model=size_model, progress=progress)
    return StepContext(calibration=data, size_model=size_model, progress=progress)


def apply(model: Any, config: Any, *, data: Any = None, progress: bool = True,
          size_model: SizeModel | None = None) -> Any:
    """Apply one compression technique; returns the transformed model.

    ``data``: calibration inputs, or ``TrainData`` for steps that train. The
    step's record is in ``model.meta["edgeopt"][step name]``. ``size_model``: the
    bytes a size budget is checked in, e.g. ``get_backend("tvm").size_model``
    (``compile.backends.registry``); default: the default backend's.
    """
    return run(model, config, context_for(data, progress=progress, size_model=size_model)).model


def _import_all() -> None:
    for info in pkgutil.walk_packages(__path__, f"{__name__}."):
        importlib.import_module(info.name)


_import_all()

__all__ = ["apply", "context_for", "run_step"]
