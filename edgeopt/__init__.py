"""edgeopt: compress, compile and evaluate neural networks for edge devices.

    qmodel = edgeopt.apply(model, edgeopt.Int8Config(), data=calib)   # simulated int8
    artifact = edgeopt.compile(qmodel, target="x86_64", out="out/")    # QDQ ONNX folder
    edgeopt.evaluate(artifact.load(), "fashion-mnist")                # {"top1": ...}
    predictor = edgeopt.runtime.load("out/")                           # .run / .predict

The names below are imported on first use (PEP 562): ``import edgeopt.runtime`` on a
device must not pull torch and the compression code in through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edgeopt.core.sizing import set_default_size_provider
from edgeopt.version import __version__

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "compile": ("edgeopt.compile", None),
    "compress": ("edgeopt.compress", None),
    "evaluate": ("edgeopt.evaluate", None),
    "runtime": ("edgeopt.runtime", None),
    "apply": ("edgeopt.compress", "apply"),
    "Int8Config": ("edgeopt.compress.quantize.spec", "Int8Config"),
    "Observer": ("edgeopt.compress.quantize.spec", "Observer"),
    "QuantConfig": ("edgeopt.compress.quantize.spec", "QuantConfig"),
    "QuantSpec": ("edgeopt.compress.quantize.spec", "QuantSpec"),
}

__all__ = ["Int8Config", "Observer", "QuantConfig", "QuantSpec", "__version__", "apply", "compile",
           "compress", "evaluate", "runtime"]

if TYPE_CHECKING:
    from edgeopt import compile, compress, evaluate, runtime  # noqa: A004, F401
    from edgeopt.compress import apply  # noqa: F401
    from edgeopt.compress.quantize.spec import (  # noqa: F401
        Int8Config,
        Observer,
        QuantConfig,
        QuantSpec,
    )


def _default_size_model():
    # Deferred: compile imports torch, and this package's import must not (see above).
    from edgeopt.compile.backends.registry import DEFAULT_BACKEND, get_backend

    return get_backend(DEFAULT_BACKEND).size_model


set_default_size_provider(_default_size_model)


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'edgeopt' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
