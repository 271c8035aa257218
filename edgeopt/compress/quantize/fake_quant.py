"""Simulated quantization: modules that compute in float on the integer grid.

Rounding is round-half-to-even, as ONNX QuantizeLinear does, so the simulated
model and the exported QDQ graph agree to the last bit except for the
accumulation order of float sums.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.compress.quantize import ops
from edgeopt.compress.quantize.observers import (
    TensorStats,
    activation_range,
    qparams,
    weight_qparams,
)
from edgeopt.compress.quantize.spec import QuantSpec, Scheme
from edgeopt.core.forms import ActQDQ, IntWeight


class Mode(str, Enum):
    FLOAT = "float"  # pass-through
    OBSERVE_MINMAX = "observe_minmax"  # calibration pass 1
    OBSERVE_HIST = "observe_hist"  # calibration pass 2
    QUANT = "quant"


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, spec: QuantSpec,
                  axis: int | None = None) -> torch.Tensor:
    """Quantize-dequantize with a straight-through gradient (exportable custom op)."""
    if spec.scheme is Scheme.POW2:
        return ops.fake_quant_pow2(x, scale, spec.kmax, -1 if axis is None else axis)
    return ops.fake_quant(x, scale, zp, spec.qmin, spec.qmax, -1 if axis is None else axis)


def to_int(x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """The integers a tensor is stored as, given broadcastable scale and zero-point."""
    q = x / scale
    if spec.scheme is Scheme.POW2:
        return ops.pow2_round(q, spec.kmax).to(torch.int32)
    return torch.clamp(torch.round(q) + zp, spec.qmin, spec.qmax).to(torch.int32)


def quantize_bias(bias: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int32 bias on the accumulator's grid (input scale x weight scale), as ORT stores it."""
    return ops.quantize_bias(bias, scale)


class ActQuant(nn.Module):
    """Quantizes one activation tensor; exported as QuantizeLinear + DequantizeLinear."""

    def __init__(self, spec: QuantSpec, *, shared_from: str | None = None) -> None:
        super().__init__()
        self.spec = spec
        # A pass-through op (max-pool, flatten) reuses its input's grid so the
        # requantization is exact and ORT can drop it.
        self.shared_from = shared_from
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1, dtype=torch.int32))
        self.mode = Mode.FLOAT
        self.stats = TensorStats()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is Mode.QUANT:
            return fake_quantize(x, self.scale, self.zero_point, self.spec)
        if self.shared_from is None:
            if self.mode is Mode.OBSERVE_MINMAX:
                self.stats.update_minmax(x)
            elif self.mode is Mode.OBSERVE_HIST:
                self.stats.update_histogram(x)
        return x

    def set_range(self, lo: float, hi: float) -> None:
        scale, zp = qparams(lo, hi, self.spec)
        self.scale.fill_(scale)
        self.zero_point.fill_(zp)

    def finish_calibration(self) -> tuple[float, float]:
        lo, hi = activation_range(self.stats, self.spec)
        self.set_range(lo, hi)
        return lo, hi

    def stored_activation(self) -> ActQDQ:
        """The quantize-dequantize a backend lowers this to (core.forms)."""
        return ActQDQ(scale=self.scale.detach().reshape(()),
                      zero_point=self.zero_point.detach().reshape(()), qmin=self.spec.qmin,
                      qmax=self.spec.qmax, signed=self.spec.symmetric,
                      uniform=self.spec.scheme is Scheme.UNIFORM, active=self.mode is Mode.QUANT)

    def extra_repr(self) -> str:
        s = f"bits={self.spec.bits}, symmetric={self.spec.symmetric}"
        return s + (f", shared_from={self.shared_from}" if self.shared_from else "")


class _QuantWeightMixin:
    """Weight fake-quant shared by conv and linear; ``quant_enabled`` toggles it."""

    w_spec: QuantSpec

    def _init_quant(self, w_spec: QuantSpec) -> None:
        self.w_spec = w_spec
        self.quant_enabled = True
        scale, zp = weight_qparams(self.weight, w_spec)
        self.register_buffer("w_scale", scale)
        self.register_buffer("w_zero_point", zp)
        # Set once the input's activation scale is known (None: float bias).
        self.register_buffer("bias_scale", None)

    def recompute_weight_qparams(self) -> None:
        scale, zp = weight_qparams(self.weight, self.w_spec)
        self.w_scale.copy_(scale)
        self.w_zero_point.copy_(zp)

    def quantized_weight(self) -> torch.Tensor:
        return fake_quantize(self.weight, self.w_scale, self.w_zero_point, self.w_spec, axis=0)

    def int_weight(self) -> torch.Tensor:
        """The stored integers (what the artifact holds)."""
        shape = (-1,) + (1,) * (self.weight.dim() - 1)
        s = self.w_scale.reshape(shape) if self.w_scale.numel() > 1 else self.w_scale
        z = self.w_zero_point.reshape(shape) if self.w_zero_point.numel() > 1 else self.w_zero_point
        return to_int(self.weight.detach(), s, z, self.w_spec)

    def stored_weight(self) -> IntWeight | None:
        """What a backend stores (core.forms): the integers, their grid and the bias on
        the int32 accumulator grid once the input's scale is known. None while
        quantization is switched off: the layer then computes with its float weight."""
        if not self.quant_enabled:
            return None
        bias = None if self.bias is None else self.bias.detach()
        bias_q = bias_scale = None
        if bias is not None and self.bias_scale is not None:
            bias_scale = self.bias_scale.detach().reshape(-1)
            bias_q = torch.clamp(torch.round(bias / bias_scale), -ops.INT32_MAX, ops.INT32_MAX)
        spec = self.w_spec
        return IntWeight(q=self.int_weight(), scale=self.w_scale.detach(),
                         zero_point=self.w_zero_point.detach(), levels=tuple(spec.levels()),
                         bits=spec.bits, uniform=spec.scheme is Scheme.UNIFORM,
                         signed=spec.symmetric, bias=bias, bias_q=bias_q, bias_scale=bias_scale)

    def _effective(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.quant_enabled:
            return self.weight, self.bias
        w = self.quantized_weight()
        b = self.bias
        if b is not None and self.bias_scale is not None:
            b = quantize_bias(b, self.bias_scale)
        return w, b


class QuantConv2d(_QuantWeightMixin, nn.Conv2d):
    @classmethod
    def from_float(cls, conv: nn.Conv2d, w_spec: QuantSpec) -> QuantConv2d:
        q = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
            bias=conv.bias is not None, padding_mode=conv.padding_mode,
        )
        q.load_state_dict(conv.state_dict())
        q._init_quant(w_spec)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self._effective()
        return self._conv_forward(x, w, b)


class QuantLinear(_QuantWeightMixin, nn.Linear):
    @classmethod
    def from_float(cls, lin: nn.Linear, w_spec: QuantSpec) -> QuantLinear:
        q = cls(lin.in_features, lin.out_features, bias=lin.bias is not None)
        q.load_state_dict(lin.state_dict())
        q._init_quant(w_spec)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self._effective()
        return F.linear(x, w, b)


QUANT_LAYERS = (QuantConv2d, QuantLinear)
