"""Let a package be called like a function (``edgeopt.compile(...)``).

DESIGN.md names both a ``compile/`` package and an ``edgeopt.compile()``
function; binding a function over the package name would break imports of
its submodules, so the package module itself becomes callable.
"""

from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, target: str) -> None:
    """Calling ``module_name`` calls ``target`` ("pkg.mod:function"), imported lazily."""
    mod_path, _, fn_name = target.partition(":")

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(importlib.import_module(mod_path), fn_name)(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
