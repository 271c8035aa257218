"""The one list of compile backends: every folder of ``compile/backends/`` that declares
``BACKEND`` (a ``Backend``) in its ``__init__.py``.

The CLI's ``--backend`` choices, a recipe's ``compile.backend``, ``compile.api`` and the
size model of a size budget all read this list, so a new backend is a new folder (and
its targets in ``targets.py``), with no list to extend elsewhere.
"""

from __future__ import annotations

import importlib
import pkgutil

from edgeopt.compile import backends as _package
from edgeopt.compile.backends.protocol import Backend
from edgeopt.core.errors import ConfigError

# What compile, recipes and the CLI use when nothing names a backend.
DEFAULT_BACKEND = "onnxruntime"


def _discover() -> dict[str, Backend]:
    found: dict[str, Backend] = {}
    for info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        # Importing the folder's __init__ is cheap: it declares BACKEND and imports
        # neither torch nor the backend's compiler.
        backend = getattr(importlib.import_module(f"{_package.__name__}.{info.name}"),
                          "BACKEND", None)
        if backend is not None:
            found[backend.name] = backend
    return found


BACKENDS: dict[str, Backend] = _discover()


def backend_names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def get_backend(name: str) -> Backend:
    """The backend called ``name``; a one-line ConfigError naming the others if none is."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r} (valid: {', '.join(BACKENDS)})") from None


def conversions() -> set[str]:
    """Precisions some backend converts a float model to while it builds (fp16)."""
    return {p for backend in BACKENDS.values() for p in backend.conversions}


def tunable() -> tuple[str, ...]:
    return tuple(name for name, backend in BACKENDS.items() if backend.tunable)
