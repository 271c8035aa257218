"""Training checkpoints: model, optimizer, schedule, step and RNG, written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeopt.core.errors import ConfigError
from edgeopt.core.files import atomic_write_bytes

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                    step: int, schedule: dict[str, Any], loss: float | None) -> Path:
    """Model + optimizer + schedule state + step + RNG, written atomically."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule,
        "torch_rng": torch.get_rng_state(),
        "loss": loss,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint as plain data: ``weights_only`` never unpickles arbitrary objects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling raises many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: cannot read training checkpoint ({first})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not an edgeopt training checkpoint")
    return state
