"""The size a model's artifact will have on disk, measured by the compile layer.

Techniques that work to a size budget (mixed precision) need the real size,
container overhead included, not an estimate from parameter counts. compress
sits below compile and must not import it, so the compile layer registers how
to measure instead (the same inversion as core.graph's lift hooks).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.fx as fx

_MEASURES: list[Callable[[fx.GraphModule], int]] = []


def register_size_model(fn: Callable[[fx.GraphModule], int]) -> None:
    _MEASURES.append(fn)


def size_model() -> Callable[[fx.GraphModule], int] | None:
    """The registered measure (what a step's context carries), or None."""
    return _MEASURES[-1] if _MEASURES else None


def artifact_bytes(gm: fx.GraphModule) -> int | None:
    """Bytes of the model file compile would write for ``gm``; None if no backend
    registered a measure (then callers fall back to an estimate)."""
    return _MEASURES[-1](gm) if _MEASURES else None
