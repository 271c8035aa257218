"""What a compressed layer stores, as plain data: the forms every backend lowers.

A backend converts these forms (integers on a quantization grid, a codebook, a
quantize-dequantize of an activation), never a technique's module class: a technique
whose layers report one of them (``stored_weight()``, ``stored_activation()``) is
lowered by every backend without editing one. A layer without ``stored_weight`` is a
float layer and is lowered from its own ``weight`` and ``bias``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class IntWeight:
    """``weight = (q - zero_point) * scale``, per output channel (axis 0) when ``scale``
    has one entry per channel, else per tensor. The bias is float, or on an int32 grid:
    ``bias = bias_q * bias_scale``."""

    q: torch.Tensor  # the stored integers, the weight's shape
    scale: torch.Tensor
    zero_point: torch.Tensor
    levels: tuple[int, ...]  # every integer q may take, ascending
    bits: int
    uniform: bool  # levels are every integer from the lowest to the highest
    signed: bool  # an int8 container (else uint8); symmetric: no zero point needed
    bias: torch.Tensor | None = None
    bias_q: torch.Tensor | None = None
    bias_scale: torch.Tensor | None = None

    @property
    def per_channel(self) -> bool:
        return self.scale.numel() > 1


@dataclass(frozen=True)
class CodebookWeight:
    """``weight = table[codes]``: a few float values, each weight an index into them."""

    table: torch.Tensor  # ascending float32 entries
    codes: torch.Tensor  # int64 indices into ``table``, the weight's shape

    def decoded(self) -> torch.Tensor:
        return self.table[self.codes]


@dataclass(frozen=True)
class ActQDQ:
    """Quantize-dequantize of an activation: ``(clamp(round(x / scale) + zp, qmin, qmax)
    - zp) * scale``. ``active`` is False while the quantizer passes values through."""

    scale: torch.Tensor  # one value
    zero_point: torch.Tensor  # one value
    qmin: int
    qmax: int
    signed: bool  # an int8 zero point (else uint8)
    uniform: bool
    active: bool


def stored_weight(layer: nn.Module) -> IntWeight | CodebookWeight | None:
    """The form a layer stores its weight in; None for a float layer."""
    report = getattr(layer, "stored_weight", None)
    return report() if callable(report) else None


def stored_activation(module: nn.Module) -> ActQDQ | None:
    """The quantize-dequantize a module stands for; None if it is no activation quantizer."""
    report = getattr(module, "stored_activation", None)
    return report() if callable(report) else None
