"""aten operator -> ONNX node(s), one small function per operator.

Each converter gets the builder, the fx node and a function resolving an fx
argument to an ONNX tensor name, and returns the output tensor name (or None
for a node that is an alias of its input).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.fx as fx

from edgeopt.compile.backends.onnxruntime.builder import GraphBuilder

aten = torch.ops.aten
Converter = Callable[[GraphBuilder, fx.Node, Callable], str]
CONVERTERS: dict = {}


def converts(*targets):
    def deco(fn):
        for t in targets:
            CONVERTERS[t] = fn
        return fn

    return deco


def _arg(node: fx.Node, i: int, name: str, default=None):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _tensor_or_const(b: GraphBuilder, v, name_of) -> str:
    if isinstance(v, fx.Node):
        return name_of(v)
    return b.const(np.asarray(v, dtype=np.float32))


@converts(aten.relu.default)
def _relu(b, n, name_of):
    return b.op("Relu", [name_of(n.args[0])])


@converts(aten.hardtanh.default, aten.relu6.default)
def _hardtanh(b, n, name_of):
    if n.target is aten.relu6.default:
        lo, hi = 0.0, 6.0
    else:
        lo, hi = _arg(n, 1, "min_val", -1.0), _arg(n, 2, "max_val", 1.0)
    return b.op("Clip", [name_of(n.args[0]), b.const(np.float32(lo)), b.const(np.float32(hi))])


_UNARY = {
    aten.sigmoid.default: "Sigmoid", aten.tanh.default: "Tanh",
    aten.hardswish.default: "HardSwish", aten.hardsigmoid.default: "HardSigmoid",
}


@converts(*_UNARY)
def _unary(b, n, name_of):
    return b.op(_UNARY[n.target], [name_of(n.args[0])])


@converts(aten.silu.default)
def _silu(b, n, name_of):
    x = name_of(n.args[0])
    return b.op("Mul", [x, b.op("Sigmoid", [x])])


_BINARY = {aten.add.Tensor: "Add", aten.sub.Tensor: "Sub", aten.mul.Tensor: "Mul",
           aten.div.Tensor: "Div"}


@converts(*_BINARY)
def _binary(b, n, name_of):
    alpha = n.kwargs.get("alpha", 1)
    if alpha != 1:
        raise NotImplementedError("add/sub with alpha != 1")
    a, c = (_tensor_or_const(b, v, name_of) for v in n.args[:2])
    return b.op(_BINARY[n.target], [a, c])


def _pair(v, default):
    v = default if v is None or v == [] else v
    return list(v) * 2 if len(v) == 1 else list(v)


@converts(aten.max_pool2d.default)
def _max_pool(b, n, name_of):
    k = _pair(n.args[1], None)
    s = _pair(_arg(n, 2, "stride", []), k)
    p = _pair(_arg(n, 3, "padding", [0]), [0, 0])
    d = _pair(_arg(n, 4, "dilation", [1]), [1, 1])
    ceil = int(bool(_arg(n, 5, "ceil_mode", False)))
    return b.op("MaxPool", [name_of(n.args[0])], kernel_shape=k, strides=s, pads=p + p,
                dilations=d, ceil_mode=ceil)


@converts(aten.avg_pool2d.default)
def _avg_pool(b, n, name_of):
    k = _pair(n.args[1], None)
    s = _pair(_arg(n, 2, "stride", []), k)
    p = _pair(_arg(n, 3, "padding", [0]), [0, 0])
    ceil = int(bool(_arg(n, 4, "ceil_mode", False)))
    include = int(bool(_arg(n, 5, "count_include_pad", True)))
    if _arg(n, 6, "divisor_override", None) is not None:
        raise NotImplementedError("avg_pool2d with divisor_override")
    return b.op("AveragePool", [name_of(n.args[0])], kernel_shape=k, strides=s, pads=p + p,
                ceil_mode=ceil, count_include_pad=include)


@converts(aten.adaptive_avg_pool2d.default)
def _adaptive_avg_pool(b, n, name_of):
    if list(n.args[1]) != [1, 1]:
        out = list(n.args[1])
        in_hw = list(n.args[0].meta["val"].shape[-2:]) if "val" in n.args[0].meta else None
        if in_hw != out:
            raise NotImplementedError(f"adaptive_avg_pool2d to {out} (only 1x1 is supported)")
        return None
    return b.op("GlobalAveragePool", [name_of(n.args[0])])


@converts(aten.mean.dim)
def _mean(b, n, name_of):
    dims = sorted(d % 4 for d in n.args[1])
    keep = bool(_arg(n, 2, "keepdim", False))
    if dims != [2, 3]:
        raise NotImplementedError(f"mean over dims {n.args[1]} (only spatial means)")
    y = b.op("GlobalAveragePool", [name_of(n.args[0])])
    return y if keep else b.op("Flatten", [y], axis=1)


@converts(aten.flatten.using_ints)
def _flatten(b, n, name_of):
    start, end = _arg(n, 1, "start_dim", 0), _arg(n, 2, "end_dim", -1)
    if end != -1:
        raise NotImplementedError(f"flatten({start}, {end})")
    return b.op("Flatten", [name_of(n.args[0])], axis=start)


def _shape_value(v) -> int:
    if isinstance(v, int):
        return v
    if isinstance(v, fx.Node) and v.target is aten.sym_size.int and v.args[1] == 0:
        return 0  # ONNX Reshape: 0 copies the batch dimension
    raise NotImplementedError(f"reshape to a computed size {v}")


@converts(aten.view.default, aten.reshape.default, aten._unsafe_view.default)
def _reshape(b, n, name_of):
    shape = np.array([_shape_value(v) for v in n.args[1]], dtype=np.int64)
    return b.op("Reshape", [name_of(n.args[0]), b.const(shape)])


@converts(aten.cat.default)
def _cat(b, n, name_of):
    return b.op("Concat", [name_of(t) for t in n.args[0]], axis=_arg(n, 1, "dim", 0))


@converts(aten.permute.default)
def _permute(b, n, name_of):
    return b.op("Transpose", [name_of(n.args[0])], perm=list(n.args[1]))


@converts(aten._softmax.default, aten.softmax.int)
def _softmax(b, n, name_of):
    return b.op("Softmax", [name_of(n.args[0])], axis=n.args[1])


@converts(aten.dropout.default, aten.clone.default, aten.alias.default, aten.detach.default,
          aten.contiguous.default)
def _identity(b, n, name_of):
    return None
