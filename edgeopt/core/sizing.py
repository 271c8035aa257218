"""The size model a technique uses when its caller names no backend.

Techniques that work to a size budget (mixed precision) need the real size of the
artifact, container overhead included, and that depends on the backend: a recipe run
takes it from its backend (``recipes.run``, ``Backend.size_model``). ``compress.apply``
has no target to ask, so it uses the default backend's. compress sits below compile and
must not import it, so the package's top (``edgeopt/__init__``) registers a provider
here, called on first need: importing the compile layer eagerly would pull torch into
``import edgeopt.runtime`` on a device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the compile package sets this at import, and the device runtime is
    import torch.fx as fx  # imported through that package: it must not import torch

SizeModel = Callable[["fx.GraphModule"], int]

_PROVIDER: list[Callable[[], SizeModel]] = []


def set_default_size_provider(provider: Callable[[], SizeModel]) -> None:
    _PROVIDER[:] = [provider]


def default_size_model() -> SizeModel | None:
    """The default backend's size model, or None when no provider is registered (then
    budgets fall back to a per-layer estimate)."""
    return _PROVIDER[0]() if _PROVIDER else None
