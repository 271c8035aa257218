"""Optional dependencies (pyproject's extras), imported on first use.

``pip install edgeopt`` alone must run every step that needs none of them; a step that
needs one says which extra to install, in one line, instead of a ModuleNotFoundError
traceback from deep inside an import chain.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from edgeopt.core.errors import ConfigError


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """``import module``, or a ConfigError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:
            raise  # something the package itself lacks: a bug, keep its traceback
        raise ConfigError(f"{feature} needs {top}, which is not installed: "
                          f"install edgeopt[{extra}] (pip install 'edgeopt[{extra}]')") from None


class LazyModule:
    """A module imported on first attribute access (``tp = LazyModule("torch_pruning", ...)``;
    ``tp.importance``): importing the code that uses it costs nothing and never fails."""

    def __init__(self, module: str, *, extra: str, feature: str) -> None:
        self._spec = (module, extra, feature)
        self._module: ModuleType | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self._module is None:
            module, extra, feature = self._spec
            self._module = require(module, extra=extra, feature=feature)
        return getattr(self._module, name)
