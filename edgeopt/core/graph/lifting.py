"""``lift``: an exported program turned into the canonical GraphModule.

The weight-carrying aten calls become real modules (``rebuild``); every other operator
is copied as it is, but for views, which stay valid at another batch (``_reshape``).
"""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx
from torch import nn

from edgeopt.core.errors import ExportError
from edgeopt.core.graph.export import DEFAULT_BATCH_RANGE, batch_range, program_input
from edgeopt.core.graph.hooks import NODE_LIFTERS, POST_LIFT
from edgeopt.core.graph.layers import layer_name
from edgeopt.core.graph.rebuild import get_path, rebuild_layer, unwrap

aten = torch.ops.aten

# Calls torch.export adds for its own bookkeeping; they compute nothing.
_SKIP_MODULES = ("_guards_fn",)


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
    """Turn an exported program into the canonical GraphModule (see ``edgeopt.core.graph``)."""
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
            tensor = get_path(src, n.target)
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
            if unwrap(node)[1] is not None:
                continue  # folded into the layer that uses it (copied lazily otherwise)
            if node.target in NODE_LIFTERS:
                lifted = NODE_LIFTERS[node.target](node, src)
                if lifted is not None:
                    env[node] = add_module_call(node, lifted, f"act_quant.{node.name}",
                                                node.args[0])
                    continue
            name, module = rebuild_layer(node, src)
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
    shape, _ = program_input(ep)
    if static is not None and all(isinstance(d, int) for d in shape) and _takes_any_batch(gm, shape):
        gm.meta["batch_range"] = DEFAULT_BATCH_RANGE
    return gm
