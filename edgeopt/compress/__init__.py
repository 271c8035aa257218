"""Compression techniques; importing this package registers their handlers."""

from __future__ import annotations

from typing import Any

from edgeopt.compress import cluster, distill, lowrank, prune, quantize  # noqa: F401
from edgeopt.core.registry import handler_for


def apply(model: Any, config: Any, *, data: Any = None, progress: bool = True) -> Any:
    """Apply one compression technique; returns the transformed model.

    Dispatches on the config's type (``core.registry``); handlers take
    ``(model, config, *, data, progress)``.
    """
    return handler_for(config)(model, config, data=data, progress=progress)
