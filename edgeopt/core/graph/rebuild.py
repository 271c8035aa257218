"""The ``nn.Conv2d`` / ``nn.Linear`` / ``nn.BatchNorm2d`` that ``lift`` rebuilds from an
aten call on stored weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.fx as fx
from torch import nn

from edgeopt.core.errors import ExportError
from edgeopt.core.graph.hooks import LAYER_FINISHERS, PARAM_WRAPPERS

aten = torch.ops.aten

CONV_OPS = (aten.conv2d.default, aten.convolution.default)
BN_OPS = (
    aten.batch_norm.default,
    aten._native_batch_norm_legit_no_training.default,
)


def get_path(gm: nn.Module, path: str) -> torch.Tensor:
    obj = gm
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def stored_tensor(node: fx.Node, src: nn.Module) -> torch.Tensor:
    """A copy of the tensor a ``get_attr`` node reads from ``src`` (for lift hooks)."""
    return get_path(src, node.target).detach().clone()


def unwrap(node):
    """(stored tensor node, wrapper node or None) for a weight/bias argument."""
    if isinstance(node, fx.Node) and node.op == "call_function" and node.target in PARAM_WRAPPERS:
        inner = node.args[0]
        if isinstance(inner, fx.Node) and inner.op == "get_attr":
            return inner, node
    return node, None


def rebuild_layer(node: fx.Node, src: nn.Module) -> tuple[str | None, nn.Module | None]:
    """(qualified name, module) for a conv, linear or batch-norm call; the module is None
    where the call cannot become one (weights computed, not stored) or is another op."""
    if node.target in CONV_OPS:
        name = _module_name(node.args[1])
        return name, _make_conv(node, src) if name else None
    if node.target is aten.linear.default:
        name = _module_name(node.args[1])
        return name, _make_linear(node, src) if name else None
    if node.target in BN_OPS:
        name = _module_name(node.args[1]) or f"bn_{node.name}"
        stored = all(a is None or a.op == "get_attr" for a in node.args[1:5])
        return name, _make_bn(node, src) if stored else None
    return None, None


def _module_name(weight_node: fx.Node) -> str | None:
    weight_node, _ = unwrap(weight_node)
    if weight_node.op != "get_attr" or not weight_node.target.endswith(".weight"):
        return None
    return weight_node.target[: -len(".weight")]


def _finish(module: nn.Module, node: fx.Node, weight_arg, bias_arg, gm: nn.Module) -> nn.Module:
    _, w_wrap = unwrap(weight_arg)
    _, b_wrap = unwrap(bias_arg)
    if w_wrap is None and b_wrap is None:
        return module
    for finisher in LAYER_FINISHERS:
        module = finisher(module, w_wrap, b_wrap, gm)
    return module


def _attr(node: fx.Node | None, gm: nn.Module) -> torch.Tensor | None:
    if node is None:
        return None
    node, _ = unwrap(node)
    if node.op != "get_attr":
        raise ExportError(f"parameter {node.name} is computed, not stored; cannot lift it")
    return stored_tensor(node, gm)


def _arg(args: Sequence, kwargs: dict, i: int, name: str, default):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _make_conv(node: fx.Node, gm: nn.Module) -> nn.Conv2d | None:
    a, kw = node.args, node.kwargs
    weight = _attr(a[1], gm)
    bias = _attr(_arg(a, kw, 2, "bias", None), gm)
    if node.target is aten.convolution.default:
        stride, padding, dilation, transposed, _, groups = a[3:9]
        if transposed:
            return None
    else:
        stride = _arg(a, kw, 3, "stride", [1, 1])
        padding = _arg(a, kw, 4, "padding", [0, 0])
        dilation = _arg(a, kw, 5, "dilation", [1, 1])
        groups = _arg(a, kw, 6, "groups", 1)
    if weight.dim() != 4:
        return None
    out_c, in_per_group, kh, kw_ = weight.shape
    conv = nn.Conv2d(
        in_per_group * groups, out_c, (kh, kw_), stride=tuple(stride),
        padding=tuple(padding), dilation=tuple(dilation), groups=groups, bias=bias is not None,
    )
    conv.weight = nn.Parameter(weight)
    if bias is not None:
        conv.bias = nn.Parameter(bias)
    return _finish(conv, node, a[1], _arg(a, kw, 2, "bias", None), gm)


def _make_linear(node: fx.Node, gm: nn.Module) -> nn.Linear:
    weight = _attr(node.args[1], gm)
    bias = _attr(_arg(node.args, node.kwargs, 2, "bias", None), gm)
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    lin.weight = nn.Parameter(weight)
    if bias is not None:
        lin.bias = nn.Parameter(bias)
    return _finish(lin, node, node.args[1], _arg(node.args, node.kwargs, 2, "bias", None), gm)


def _make_bn(node: fx.Node, gm: nn.Module) -> nn.BatchNorm2d:
    a = node.args
    weight, bias, mean, var = (_attr(n, gm) for n in a[1:5])
    eps = a[7] if node.target is aten.batch_norm.default else a[6]
    bn = nn.BatchNorm2d(mean.numel(), eps=float(eps))
    with torch.no_grad():
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        if weight is not None:
            bn.weight.copy_(weight)
        if bias is not None:
            bn.bias.copy_(bias)
    return bn.eval()
