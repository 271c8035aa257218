"""Rewrite a simulated-quantized canonical model into plain aten arithmetic.

TVM's torch frontend cannot import edgeopt's ``edgeopt::fake_quant`` custom op.
Before export, each quantized layer is replaced by one that holds its weight as
the stored integers (int8/uint8) and dequantizes them in ``forward``
(``(w_int - zero_point) * scale``); each activation quantizer becomes
``clamp(round(x / s) + z, qmin, qmax) - z) * s``. The export keeps the integer
weights as parameters (not constants), so relax cannot fold the dequantization
away: the artifact stores int8 and the compiled code widens them on every call.
A codebook layer becomes a float layer with its decoded weights.

Which layers those are comes from their stored form (``core.forms``: ``IntWeight``,
``CodebookWeight``, ``ActQDQ``), never from a technique's module class.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from edgeopt.core.forms import ActQDQ, CodebookWeight, IntWeight, stored_activation, stored_weight

# Names of the buffers holding stored integers: the export keeps exactly these as
# runtime parameters (everything else is bound as a constant and folded).
INT_WEIGHT = "w_int"


def _int_container(q: torch.Tensor) -> torch.dtype:
    lo, hi = int(q.min()), int(q.max())
    if -128 <= lo and hi <= 127:
        return torch.int8
    if 0 <= lo and hi <= 255:
        return torch.uint8
    return torch.int16  # not expected for <= 8-bit specs; kept exact rather than refused


class _DequantWeight(nn.Module):
    """A conv/linear whose weight is stored as integers and dequantized per call."""

    def __init__(self, form: IntWeight) -> None:
        super().__init__()
        shape = (-1,) + (1,) * (form.q.dim() - 1)
        scale, zp = form.scale.float(), form.zero_point.float()
        if form.per_channel:
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        else:
            scale, zp = scale.reshape(()), zp.reshape(())
        # A Parameter, not a buffer: TVM's importer keeps parameters as function
        # inputs when asked and always binds buffers as (foldable) constants.
        self.register_parameter(
            INT_WEIGHT, nn.Parameter(form.q.to(_int_container(form.q)), requires_grad=False))
        self.register_buffer("w_scale", scale)
        self.register_buffer("w_zero_point", zp)
        b = form.bias
        if b is not None and form.bias_q is not None:
            b = form.bias_q * form.bias_scale  # on the int32 grid, as the simulation
        self.register_buffer("bias", None if b is None else b.clone())

    def weight(self) -> torch.Tensor:
        return (getattr(self, INT_WEIGHT).to(torch.float32) - self.w_zero_point) * self.w_scale


class DequantConv2d(_DequantWeight):
    def __init__(self, layer: nn.Conv2d, form: IntWeight) -> None:
        super().__init__(form)
        if layer.padding_mode != "zeros":
            raise NotImplementedError(f"conv padding mode {layer.padding_mode}")
        self.conv_args = dict(stride=layer.stride, padding=layer.padding,
                              dilation=layer.dilation, groups=layer.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, **self.conv_args)


class DequantLinear(_DequantWeight):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


class QDQ(nn.Module):
    """Quantize-dequantize of an activation in ops every backend has (round, clamp)."""

    def __init__(self, form: ActQDQ) -> None:
        super().__init__()
        if not form.uniform:
            raise NotImplementedError("non-uniform activation quantization")
        self.register_buffer("scale", form.scale.float())
        self.register_buffer("zero_point", form.zero_point.float())
        self.qmin, self.qmax = float(form.qmin), float(form.qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Division, not multiplication by the reciprocal: the simulation divides too,
        # and the two round some ties differently.
        q = torch.round(x / self.scale) + self.zero_point
        return (torch.clamp(q, self.qmin, self.qmax) - self.zero_point) * self.scale


def _decoded(layer: nn.Conv2d | nn.Linear, form: CodebookWeight) -> nn.Module:
    """A plain float layer computing with a codebook layer's decoded weights: relax has no
    conversion for the gather op, and a native library stores float constants anyway."""
    if isinstance(layer, nn.Conv2d):
        plain: nn.Module = nn.Conv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
            padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
            bias=layer.bias is not None, padding_mode=layer.padding_mode)
    else:
        plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        plain.weight.copy_(form.decoded())
        if layer.bias is not None:
            plain.bias.copy_(layer.bias)
    return plain.eval()


def _replacement(module: nn.Module) -> nn.Module | None:
    """The plain-arithmetic module for a stored form (core.forms); None: keep the module."""
    act = stored_activation(module)
    if act is not None:
        return QDQ(act) if act.active else nn.Identity()
    form = stored_weight(module)
    if isinstance(form, CodebookWeight):
        return _decoded(module, form)
    if isinstance(form, IntWeight):
        return DequantConv2d(module, form) if isinstance(module, nn.Conv2d) else \
            DequantLinear(form)
    return None


def lower_fake_quant(gm: fx.GraphModule) -> tuple[fx.GraphModule, bool]:
    """A copy of ``gm`` without fake-quant modules, and whether it has integer weights.

    Raises ``NotImplementedError`` naming the layer for a scheme this cannot express.
    """
    replaced = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        try:
            new = _replacement(gm.get_submodule(node.target))
        except NotImplementedError as exc:
            raise NotImplementedError(f"{exc} at layer '{node.target}'") from None
        if new is not None:
            replaced[node.target] = new
    if not replaced:
        return gm, False
    out = copy.deepcopy(gm)
    for name, new in replaced.items():
        parent, _, leaf = name.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, leaf, new)
    out.recompile()
    has_int = any(isinstance(m, _DequantWeight) for m in replaced.values())
    return out, has_int
