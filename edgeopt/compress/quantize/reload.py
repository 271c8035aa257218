"""Recognise exported fake-quant ops when a compressed ``.pt2`` is loaded again.

``edgeopt compress --out model.pt2`` saves the simulated-quantized model with
torch.export; its graph holds ``edgeopt::fake_quant`` / ``quantize_bias`` ops
(ops.py). These hooks make ``core.graph.lift`` rebuild QuantConv2d /
QuantLinear / ActQuant modules from them, so ``edgeopt compile model.pt2``
produces the same QDQ artifact as compiling the in-memory model.
"""

from __future__ import annotations

import math

import torch
import torch.fx as fx
from torch import nn

from edgeopt.compress.quantize.fake_quant import ActQuant, Mode, QuantConv2d, QuantLinear
from edgeopt.compress.quantize.spec import QuantSpec, Scheme
from edgeopt.core import graph

FAKE_QUANT = torch.ops.edgeopt.fake_quant.default
FAKE_QUANT_POW2 = torch.ops.edgeopt.fake_quant_pow2.default
QUANTIZE_BIAS = torch.ops.edgeopt.quantize_bias.default


def spec_from_range(qmin: int, qmax: int, per_channel: bool) -> QuantSpec:
    symmetric = qmin < 0
    bits = int(math.log2(qmax + 1)) + (1 if symmetric else 0)
    return QuantSpec(bits=bits, symmetric=symmetric, per_channel=per_channel)


def _finish_layer(module, w_wrap, b_wrap, src):
    if w_wrap is not None and w_wrap.target is FAKE_QUANT:
        _, scale, zp, qmin, qmax, axis = w_wrap.args
        spec = spec_from_range(qmin, qmax, per_channel=axis >= 0)
        cls = QuantConv2d if isinstance(module, nn.Conv2d) else QuantLinear
        module = cls.from_float(module, spec)
        module.w_scale = graph.stored_tensor(scale, src)
        module.w_zero_point = graph.stored_tensor(zp, src)
    elif w_wrap is not None and w_wrap.target is FAKE_QUANT_POW2:
        _, scale, kmax, axis = w_wrap.args
        spec = QuantSpec(bits=int(math.log2(kmax + 2)) + 1, scheme=Scheme.POW2,
                         per_channel=axis >= 0)
        cls = QuantConv2d if isinstance(module, nn.Conv2d) else QuantLinear
        module = cls.from_float(module, spec)
        module.w_scale = graph.stored_tensor(scale, src)
    if b_wrap is not None and b_wrap.target is QUANTIZE_BIAS:
        module.bias_scale = graph.stored_tensor(b_wrap.args[1], src)
    return module


def _lift_act(node: fx.Node, src) -> ActQuant | None:
    _, scale, zp, qmin, qmax, axis = node.args
    if axis >= 0:
        return None
    q = ActQuant(spec_from_range(qmin, qmax, per_channel=False))
    q.scale.copy_(graph.stored_tensor(scale, src).reshape(1))
    q.zero_point.copy_(graph.stored_tensor(zp, src).reshape(1))
    q.mode = Mode.QUANT
    return q


def _record_precision(gm: fx.GraphModule) -> None:
    layers = graph.leaf_modules(gm)
    if not any(isinstance(m, (QuantConv2d, QuantLinear)) for _, m in layers):
        return
    precision = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        mod = gm.get_submodule(node.target)
        if isinstance(mod, (QuantConv2d, QuantLinear)):
            inp = node.args[0]
            act = gm.get_submodule(inp.target) if inp.op == "call_module" else None
            a_bits = act.spec.bits if isinstance(act, ActQuant) else 32
            precision[str(node.target)] = f"w{mod.w_spec.label}a{a_bits}"
        elif isinstance(mod, (nn.Conv2d, nn.Linear)):
            precision[str(node.target)] = "fp32"
    gm.meta["edgeopt"] = {"technique": "ptq (loaded)", "precision": precision}


graph.PARAM_WRAPPERS[FAKE_QUANT] = True
graph.PARAM_WRAPPERS[FAKE_QUANT_POW2] = True
graph.PARAM_WRAPPERS[QUANTIZE_BIAS] = True
graph.LAYER_FINISHERS.append(_finish_layer)
graph.NODE_LIFTERS[FAKE_QUANT] = _lift_act
graph.POST_LIFT.append(_record_precision)
