"""Turn anything evaluable into one numpy -> numpy function.

Evaluation takes any runnable (DESIGN seam 5): a torch module, a Predictor
from ``edgeopt.runtime`` (anything with ``.run(x)``), or a plain callable on
numpy arrays. Everything downstream only ever sees ``fn(x) -> logits``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

NumpyFn = Callable[[np.ndarray], np.ndarray]


def is_torch_module(obj: Any) -> bool:
    # Only look at torch if something already imported it: a Predictor or a
    # numpy callable can then be evaluated on a machine without torch.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def as_numpy_fn(runnable: Any) -> NumpyFn:
    """Return ``fn(x: float32 ndarray) -> ndarray`` running ``runnable``.

    A torch module is put in eval mode (dropout and batch-norm statistics would
    otherwise make results depend on the batch) and run under inference mode.
    """
    if is_torch_module(runnable):
        return _torch_fn(runnable)
    # Checked before plain callables: a Predictor may also define __call__.
    if callable(getattr(runnable, "run", None)):
        return lambda x: np.asarray(runnable.run(x))
    if callable(runnable):
        return lambda x: np.asarray(runnable(x))
    raise TypeError(
        f"cannot evaluate a {type(runnable).__name__}: expected a torch.nn.Module, "
        "an object with .run(x), or a callable on numpy arrays"
    )


def _torch_fn(module: Any) -> NumpyFn:
    # Only a torch module gets here: torch (and core.graph, which imports it) is imported
    # for it alone, so that evaluating a Predictor never needs torch (is_torch_module).
    import torch

    from edgeopt.core.graph import eval_mode

    eval_mode(module)

    def fn(x: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        with torch.inference_mode():
            out = module(inputs)
        return out.detach().float().cpu().numpy()

    return fn


def describe(runnable: Any) -> str:
    """Short name of what executes ``runnable``: "torch", "onnxruntime", "callable"..."""
    if is_torch_module(runnable):
        return "torch"
    backend = getattr(runnable, "backend", None)
    if backend is not None:
        # Backends may be str Enums; their value is the readable name.
        return str(getattr(backend, "value", backend))
    if callable(getattr(runnable, "run", None)):
        return type(runnable).__name__.lower()
    return "callable"
