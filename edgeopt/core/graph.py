"""The canonical model form every technique works on.

Whatever the user hands us (an nn.Module, a torch.export program, TorchScript,
ONNX) is traced once with ``torch.export`` into aten operators. ``lift`` then
turns the weight-carrying operators back into real ``nn.Conv2d`` /
``nn.Linear`` / ``nn.BatchNorm2d`` modules named by their qualified path
("layer1.0.conv1"), so compression techniques can swap modules and the
per-layer policy can match names, while every other operator stays an aten
call the exporter maps one to one.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Sequence

import torch
import torch.fx as fx
from torch import nn

from edgeopt.core.errors import ExportError

aten = torch.ops.aten

CONV_OPS = (aten.conv2d.default, aten.convolution.default)
BN_OPS = (
    aten.batch_norm.default,
    aten._native_batch_norm_legit_no_training.default,
)
# Calls torch.export adds for its own bookkeeping; they compute nothing.
_SKIP_MODULES = ("_guards_fn",)

# Extension points, so a compression package can teach ``lift`` to recognise
# the ops its exported models contain (quantize/reload.py) without core
# importing it:
#   PARAM_WRAPPERS: op -> True for an op applied to a stored weight/bias
#       (e.g. fake-quant of a weight); the layer is lifted from the stored tensor.
#   LAYER_FINISHERS: fn(module, weight_wrapper, bias_wrapper, src) -> module,
#       called when a lifted layer's weight or bias was wrapped.
#   NODE_LIFTERS: op -> fn(node, src) -> nn.Module | None, for standalone ops
#       that become modules (e.g. activation fake-quant).
#   POST_LIFT: fn(gm) run on the finished canonical module.
PARAM_WRAPPERS: dict = {}
LAYER_FINISHERS: list = []
NODE_LIFTERS: dict = {}
POST_LIFT: list = []


def eval_mode(module: nn.Module) -> nn.Module:
    """``module.eval()``, except for torch.export's unlifted modules, which refuse it
    (they are always in inference form already)."""
    try:
        return module.eval()
    except NotImplementedError:
        return module


# The batch range a plain module is exported with (torch.export needs a bound).
DEFAULT_BATCH_RANGE = (1, 1 << 16)


def _bound(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, AttributeError, OverflowError):  # sympy's int_oo
        return None


def _program_input(model) -> tuple[list | None, dict]:
    """(shape of the first user input, range constraints) of an ExportedProgram or of the
    module ``ep.module()`` returns; (None, {}) for anything else."""
    if isinstance(model, torch.export.ExportedProgram):
        placeholders = model.graph.find_nodes(op="placeholder")
        specs = model.graph_signature.input_specs
        users = [n for n, s in zip(placeholders, specs) if s.kind.name == "USER_INPUT"]
        ranges = model.range_constraints
    elif isinstance(model, fx.GraphModule) and hasattr(model, "range_constraints"):
        users, ranges = model.graph.find_nodes(op="placeholder"), model.range_constraints
    else:
        return None, {}
    val = users[0].meta.get("val") if users else None
    return (list(val.shape) if isinstance(val, torch.Tensor) else None), dict(ranges or {})


def batch_range(model) -> tuple[int, int | None] | None:
    """(min, max) batch sizes ``model`` accepts (max None: unbounded; min == max: a
    static batch), as a torch.export program declares it or a canonical copy recorded
    it; None for a plain module, which is assumed to take any batch."""
    meta = getattr(model, "meta", None)
    if isinstance(meta, dict) and meta.get("batch_range") and not hasattr(model, "range_constraints"):
        lo, hi = meta["batch_range"]
        return int(lo), None if hi is None else int(hi)
    shape, ranges = _program_input(model)
    if not shape:
        return None
    dim = shape[0]
    if isinstance(dim, int):
        return dim, dim
    vr = ranges.get(dim.node.expr)
    if vr is None:  # a derived size (2 * s0, ...): say only that it is dynamic
        return 1, None
    lo, hi = _bound(vr.lower), _bound(vr.upper)
    return max(1, lo or 1), hi


def export_program(module: nn.Module, example: torch.Tensor,
                   batches: tuple[int, int | None] | None = None) -> torch.export.ExportedProgram:
    """torch.export with a dynamic batch dimension, functionalized.

    A torch.export program (``ep.module()``, or a canonical copy of one) is re-exported
    with its own batch range, static when it was exported at a fixed batch: a wider range
    than the program's would violate its constraints. Other dimensions are exported at
    the example's sizes, which the data fixes anyway. ``batches`` gives that range for a
    copy of a program (a deep copy of ``ep.module()`` no longer knows it).
    """
    module = eval_mode(module)
    lo, hi = batches or batch_range(module) or DEFAULT_BATCH_RANGE
    # Exporting at batch 2 where allowed: torch.export specializes a size of 1.
    n = lo if hi == lo else max(lo, 2) if hi is None else min(max(lo, 2), hi)
    dynamic = None if n == hi == lo else (
        {0: torch.export.Dim("batch", min=lo)} if hi is None
        else {0: torch.export.Dim("batch", min=lo, max=hi)})
    try:
        example = example[:1].expand(n, *example.shape[1:]).contiguous()
        if isinstance(module, torch.jit.ScriptModule):
            from torch._export.converter import TS2EPConverter

            with warnings.catch_warnings():  # its notes on unused buffers are not the user's
                warnings.simplefilter("ignore", UserWarning)
                module = TS2EPConverter(module, (example,)).convert().module()
        ep = torch.export.export(module, (example,), dynamic_shapes=(dynamic,) if dynamic else None,
                                 strict=False)
    except Exception as exc:  # torch raises many types here; the first line is what matters
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.export cannot trace the model: {first}") from exc
    return ep.run_decompositions({})


def _set_path(root: nn.Module, path: str, value: nn.Module | torch.Tensor) -> None:
    parts = path.split(".")
    parent = root
    for part in parts[:-1]:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    if isinstance(value, nn.Module):
        parent.add_module(parts[-1], value)
    elif isinstance(value, nn.Parameter):
        parent.register_parameter(parts[-1], value)
    else:
        parent.register_buffer(parts[-1], value)


def _get_path(gm: nn.Module, path: str) -> torch.Tensor:
    obj = gm
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def stored_tensor(node: fx.Node, src: nn.Module) -> torch.Tensor:
    """A copy of the tensor a ``get_attr`` node reads from ``src`` (for lift hooks)."""
    return _get_path(src, node.target).detach().clone()


def _unwrap(node):
    """(stored tensor node, wrapper node or None) for a weight/bias argument."""
    if isinstance(node, fx.Node) and node.op == "call_function" and node.target in PARAM_WRAPPERS:
        inner = node.args[0]
        if isinstance(inner, fx.Node) and inner.op == "get_attr":
            return inner, node
    return node, None


def _module_name(weight_node: fx.Node) -> str | None:
    weight_node, _ = _unwrap(weight_node)
    if weight_node.op != "get_attr" or not weight_node.target.endswith(".weight"):
        return None
    return weight_node.target[: -len(".weight")]


def _finish(module: nn.Module, node: fx.Node, weight_arg, bias_arg, gm: nn.Module) -> nn.Module:
    _, w_wrap = _unwrap(weight_arg)
    _, b_wrap = _unwrap(bias_arg)
    if w_wrap is None and b_wrap is None:
        return module
    for finisher in LAYER_FINISHERS:
        module = finisher(module, w_wrap, b_wrap, gm)
    return module


def _attr(node: fx.Node | None, gm: nn.Module) -> torch.Tensor | None:
    if node is None:
        return None
    node, _ = _unwrap(node)
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


def layer_name(node: fx.Node) -> str:
    """The qualified module name a node came from, for messages and policies."""
    if node.op == "call_module":
        return str(node.target)
    if "layer" in node.meta:
        return node.meta["layer"]
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1][0]
        if path and not path.startswith("_empty"):
            return path
    return node.name


def _is_flatten(node: fx.Node) -> bool:
    """``view(x, [N, C*H*W])`` keeping x's batch: what ``torch.flatten(x, 1)`` exports to."""
    val = node.args[0].meta.get("val") if isinstance(node.args[0], fx.Node) else None
    shape = node.args[1]
    if not isinstance(val, torch.Tensor) or val.dim() < 3 or len(shape) != 2:
        return False
    first = shape[0].meta.get("val") if isinstance(shape[0], fx.Node) else shape[0]
    rest = list(val.shape[1:])
    return (str(first) == str(val.shape[0]) and all(isinstance(d, int) for d in rest)
            and shape[1] in (-1, math.prod(rest)))


def _reshape(graph: fx.Graph, node: fx.Node, env: dict, static_batch: int | None) -> fx.Node:
    """A ``view`` as the canonical form keeps it. A flatten stays a flatten, not a view
    to the sizes it was traced at, so that pruning channels or running at another batch
    keeps it valid; any other view becomes a reshape, which also takes the non-contiguous
    (channels-last) tensors a view refuses. In a static-batch program a leading size
    equal to the batch is read from the input instead (``_takes_any_batch`` checks it)."""
    x = env[node.args[0]]
    if _is_flatten(node):
        new = graph.call_function(aten.flatten.using_ints, (x, 1))
    else:
        shape = [env[a] if isinstance(a, fx.Node) else a for a in node.args[1]]
        val = node.args[0].meta.get("val")
        if (static_batch is not None and shape and shape[0] == static_batch
                and isinstance(val, torch.Tensor) and val.dim() and val.shape[0] == static_batch):
            shape[0] = graph.call_function(aten.sym_size.int, (x, 0))
        new = graph.call_function(aten.reshape.default, (x, shape))
    new.meta = dict(node.meta)
    return new


def _takes_any_batch(gm: fx.GraphModule, shape: list[int]) -> bool:
    """Whether a graph lifted from a static-batch program computes the same per sample
    at twice its batch: the batch was then only baked into reshapes the lift made
    general, and calibration and training may use any batch."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2 * shape[0], *shape[1:], generator=gen)
    try:
        with torch.no_grad():
            whole = gm(x)
            parts = torch.cat([gm(x[:shape[0]]), gm(x[shape[0]:])])
    except Exception:  # a size still fixed somewhere: the batch stays static
        return False
    return (isinstance(whole, torch.Tensor) and whole.shape == parts.shape
            and torch.allclose(whole, parts, rtol=1e-4, atol=1e-5))


def lift(ep: torch.export.ExportedProgram) -> fx.GraphModule:
    """Turn an exported program into the canonical GraphModule (see module doc)."""
    src = ep.module()
    batches = batch_range(ep)
    static = batches[0] if batches and batches[0] == batches[1] else None
    root = nn.Module()
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    used_names: set[str] = set()
    bn_nodes: dict[fx.Node, fx.Node] = {}

    def unique(name: str) -> str:
        base, i = name, 1
        while name in used_names:
            name, i = f"{base}_{i}", i + 1
        used_names.add(name)
        return name

    def add_module_call(node: fx.Node, module: nn.Module, name: str, inp: fx.Node) -> fx.Node:
        name = unique(name)
        _set_path(root, name, module)
        new = graph.call_module(name, (env[inp],))
        new.meta = dict(node.meta)
        new.meta["layer"] = name
        return new

    # get_attr nodes are copied lazily: only those still used by a non-lifted node.
    def lookup(n: fx.Node) -> fx.Node:
        if n in env:
            return env[n]
        if n.op == "get_attr":
            tensor = _get_path(src, n.target)
            name = unique(n.target)
            _set_path(root, name, tensor.detach().clone())
            env[n] = graph.get_attr(name)
            return env[n]
        if n.op == "call_function":  # a skipped weight wrapper still used elsewhere
            env[n] = graph.node_copy(n, lookup)
            return env[n]
        raise KeyError(n)

    for node in src.graph.nodes:
        if node.op == "get_attr":
            continue
        if node.op == "call_module" and node.target in _SKIP_MODULES:
            continue
        if node.op == "placeholder":
            env[node] = graph.placeholder(node.name)
            env[node].meta = dict(node.meta)
            continue
        if node.op == "call_function":
            if _unwrap(node)[1] is not None:
                continue  # folded into the layer that uses it (copied lazily otherwise)
            if node.target in NODE_LIFTERS:
                lifted = NODE_LIFTERS[node.target](node, src)
                if lifted is not None:
                    env[node] = add_module_call(node, lifted, f"act_quant.{node.name}",
                                                node.args[0])
                    continue
            name = None
            module = None
            if node.target in CONV_OPS:
                name = _module_name(node.args[1])
                module = _make_conv(node, src) if name else None
            elif node.target is aten.linear.default:
                name = _module_name(node.args[1])
                module = _make_linear(node, src) if name else None
            elif node.target in BN_OPS:
                name = _module_name(node.args[1]) or f"bn_{node.name}"
                if all(a is None or a.op == "get_attr" for a in node.args[1:5]):
                    module = _make_bn(node, src)
            if module is not None:
                env[node] = add_module_call(node, module, name, node.args[0])
                if node.target is aten._native_batch_norm_legit_no_training.default:
                    bn_nodes[node] = env[node]
                continue
            if node.target is operator.getitem and node.args[0] in bn_nodes:
                if node.args[1] != 0:
                    raise ExportError(f"batch-norm statistics output used at {layer_name(node)}")
                env[node] = bn_nodes[node.args[0]]
                continue
        if node.op == "call_function" and node.target is aten.view.default:
            env[node] = _reshape(graph, node, env, static)
            continue
        new = graph.node_copy(node, lookup)
        env[node] = new
    out = graph.output_node()
    if isinstance(out.args[0], (tuple, list)) and len(out.args[0]) == 1:
        # A single-output model returns a tensor, as the user's module did.
        out.args = (out.args[0][0],)
    for node in graph.find_nodes(op="call_function", target=aten.sym_size.int):
        if not node.users:  # only a rewritten flatten read it
            graph.erase_node(node)
    gm = fx.GraphModule(root, graph)
    gm.graph.lint()
    gm.recompile()
    for hook in POST_LIFT:
        hook(gm)
    gm.meta["batch_range"] = batches
    shape, _ = _program_input(ep)
    if static is not None and all(isinstance(d, int) for d in shape) and _takes_any_batch(gm, shape):
        gm.meta["batch_range"] = DEFAULT_BATCH_RANGE
    return gm


def leaf_modules(gm: fx.GraphModule, types: tuple[type, ...] = (nn.Conv2d, nn.Linear)):
    """(name, module) of every call_module node whose module is of ``types``, in graph order."""
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if isinstance(mod, types):
                out.append((str(node.target), mod))
    return out
