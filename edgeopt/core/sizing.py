"""The size model a technique uses when its caller names no backend.

Techniques that work to a size budget (mixed precision) need the real size of the
artifact, container overhead included, and that depends on the backend: a recipe run
takes it from its backend (``recipes.run``, ``Backend.size_model``). ``compress.apply``
has no target to ask, so it uses the default backend's, which the compile layer sets
here when it is imported: compress sits below compile and must not import it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.fx as fx

SizeModel = Callable[[fx.GraphModule], int]

_DEFAULT: list[SizeModel] = []


def set_default_size_model(fn: SizeModel) -> None:
    _DEFAULT[:] = [fn]


def default_size_model() -> SizeModel | None:
    """The default backend's size model, or None before compile is imported (then
    budgets fall back to a per-layer estimate)."""
    return _DEFAULT[0] if _DEFAULT else None
