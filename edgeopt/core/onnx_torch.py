"""ONNX -> torch module with onnx2torch, for the techniques that need PyTorch.

The graph is simplified with onnxslim first (shape inference + constant
folding), so the Shape -> Gather -> Concat -> Reshape chains real exporters
emit become constants rather than shape arithmetic torch.export has to trace.
onnx2torch then builds an fx module with one submodule per ONNX node (real
``nn.Conv2d`` / ``nn.Linear`` where the weights are initializers), which we
rename to the PyTorch module path the exporter recorded ("layer1.conv1.0"), so
a model's layer names, and so its per-layer policies, are the same whether the
user hands us the ``.pt`` or the ``.onnx`` form (see ``onnx_names``).
"""

from __future__ import annotations

import contextlib
import re
import sys
import types

import numpy as np
import onnx
import torch
import torch.fx as fx
from onnx import numpy_helper
from torch import nn

from edgeopt.core.errors import ModelLoadError
from edgeopt.core.onnx_names import layer_paths

# onnx2torch 1.5 has converters up to opset 17 (LayerNormalization-17 is its newest).
MAX_OPSET = 17
NEEDED_BY = "the torch techniques (quantize, prune, distill, QAT, cluster, low-rank)"

# onnx2torch converters that call torchvision at run time, by ONNX op.
TORCHVISION_OPS = {"NonMaxSuppression": "nms", "RoiAlign": "roi_align"}

_ONNX2TORCH = None
_TORCHVISION_STUBBED = False


def _torchvision_importable() -> bool:
    before = set(sys.modules)
    try:
        import torchvision  # noqa: F401
    except Exception:  # a CUDA torchvision beside CPU torch fails with RuntimeError, not ImportError
        for name in set(sys.modules) - before:
            if name == "torchvision" or name.startswith("torchvision."):
                del sys.modules[name]
        return False
    return True


def _needs_torchvision(op: str):
    def refuse(*args, **kwargs):
        raise ModelLoadError(f"ONNX op {op} needs torchvision, which is not installed")

    return refuse


@contextlib.contextmanager
def _torchvision_stub():
    """A stand-in ``torchvision`` in sys.modules while onnx2torch is imported.

    onnx2torch imports torchvision at module level only for its NMS and RoiAlign
    converters, and the PyPI torchvision wheel pulls a CUDA torch that does not
    load beside our CPU build. The stub lets every other converter import; it is
    removed again at once so that other libraries probing for torchvision (the
    torch.onnx exporter does) still see that it is absent. Models using those two
    ops are refused at load (``to_torch``), and the stub functions raise if reached.
    """
    ops = types.ModuleType("torchvision.ops")
    ops.nms = _needs_torchvision("NonMaxSuppression")
    ops.box_convert = _needs_torchvision("NonMaxSuppression")
    ops.roi_align = _needs_torchvision("RoiAlign")
    stub = types.ModuleType("torchvision")
    stub.ops = ops
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = stub, ops
    try:
        yield
    finally:
        for name in ("torchvision", "torchvision.ops"):
            if sys.modules.get(name) in (stub, ops):
                del sys.modules[name]


def onnx2torch():
    """The onnx2torch package, imported once (behind the torchvision stub when needed)."""
    global _ONNX2TORCH, _TORCHVISION_STUBBED
    if _ONNX2TORCH is None:
        if _torchvision_importable():
            import onnx2torch as mod
        else:
            with _torchvision_stub():
                import onnx2torch as mod
            _TORCHVISION_STUBBED = True
        _ONNX2TORCH = mod
    return _ONNX2TORCH


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim's shape inference + constant folding; the model as it was if onnxslim fails
    (onnx2torch may still convert it, and its own error then names the node)."""
    import onnxslim

    try:
        slim = onnxslim.slim(onnx.ModelProto.FromString(model.SerializeToString()))
    except Exception:  # onnxslim raises anything from its graph passes; it is only an aid
        return model
    return slim if isinstance(slim, onnx.ModelProto) else model


def _decompose_gelu(model: onnx.ModelProto) -> None:
    """Gelu-20 (the dynamo exporter writes it) as opset-17 ops, which the version converter
    cannot do and onnx2torch has no converter for: 0.5 x (1 + erf(x / sqrt 2)), or the tanh form."""
    import math

    nodes = []
    for k, node in enumerate(model.graph.node):
        if node.op_type != "Gelu" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        approx = next((onnx.helper.get_attribute_value(a) for a in node.attribute
                       if a.name == "approximate"), b"none")
        x, y, p = node.input[0], node.output[0], f"_gelu{k}_"
        const = {}

        def c(name: str, value: float, const=const, p=p) -> str:
            const[p + name] = value
            return p + name

        mk = onnx.helper.make_node
        if approx in (b"tanh", "tanh"):
            inner = [mk("Mul", [x, x], [p + "x2"]), mk("Mul", [p + "x2", x], [p + "x3"]),
                     mk("Mul", [p + "x3", c("k", 0.044715)], [p + "kx3"]),
                     mk("Add", [x, p + "kx3"], [p + "s"]),
                     mk("Mul", [p + "s", c("r", math.sqrt(2 / math.pi))], [p + "rs"]),
                     mk("Tanh", [p + "rs"], [p + "t"])]
        else:
            inner = [mk("Div", [x, c("sqrt2", math.sqrt(2.0))], [p + "d"]),
                     mk("Erf", [p + "d"], [p + "t"])]
        nodes += inner + [mk("Add", [p + "t", c("one", 1.0)], [p + "a"]),
                          mk("Mul", [x, p + "a"], [p + "m"]),
                          mk("Mul", [p + "m", c("half", 0.5)], [y], name=node.name)]
        for name, value in const.items():
            model.graph.initializer.append(
                numpy_helper.from_array(np.array(value, dtype=np.float32), name))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def downgrade(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` at opset ``MAX_OPSET`` when it is newer (the dynamo exporter writes 18-20),
    or as it was when onnx's version converter cannot (ops that are new since then, like
    Gelu-20): the converter's error then names them."""
    if _opsets(model).get("", 0) <= MAX_OPSET:
        return model
    from onnx import version_converter

    model = onnx.ModelProto.FromString(model.SerializeToString())
    _decompose_gelu(model)
    try:
        return version_converter.convert_version(model, MAX_OPSET)
    except Exception:  # the converter raises RuntimeError/ValidationError per op
        return model


def drop_needless_allowzero(model: onnx.ModelProto) -> None:
    """Clear ``allowzero=1`` on Reshape nodes where it changes nothing (onnx2torch refuses it).

    The torch exporters set it to match torch.reshape, where 0 is a literal size; it only
    matters for a 0 in the target shape, so it stays where the shape is a constant
    holding a 0. A computed shape takes its sizes from real tensors, of batch >= 1.
    """
    consts = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        shape = consts.get(node.input[1])
        if shape is not None and 0 in numpy_helper.to_array(shape).tolist():
            continue
        for a in list(node.attribute):
            if a.name == "allowzero":
                node.attribute.remove(a)


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {o.domain if o.domain != "ai.onnx" else "": o.version for o in model.opset_import}


def _node_label(node: onnx.NodeProto, i: int) -> str:
    return node.name or f"#{i}"


def _refuse(path, op: str, node: str, why: str, needed_by: str) -> ModelLoadError:
    return ModelLoadError(
        f"{path}: ONNX op {op} (node {node}) cannot be converted to PyTorch: {why}; "
        f"the PyTorch form is needed by {needed_by}"
    )


def _why(exc: BaseException) -> str:
    """One line from an onnx2torch failure; its 'Converter is not implemented
    (OperationDescription(domain=..., operation_type=..., version=N))' becomes 'no converter ...'."""
    msg = str(exc).strip()
    m = re.search(r"operation_type='([^']*)', version=(\d+)", msg)
    if "Converter is not implemented" in msg and m:
        return f"onnx2torch has no converter for {m.group(1)} at opset {m.group(2)}"
    return (msg.splitlines() or [type(exc).__name__])[0][:200]


def _culprit(model: onnx.ModelProto) -> tuple[int, onnx.NodeProto, BaseException] | None:
    """The first node whose converter fails: onnx2torch's own errors do not say which."""
    onnx2torch()
    from onnx2torch.node_converters import get_converter
    from onnx2torch.onnx_graph import OnnxGraph

    opsets = _opsets(model)
    graph = OnnxGraph(model.graph)
    for i, node in enumerate(graph.nodes.values()):
        try:
            get_converter(domain=node.domain, operation_type=node.operation_type,
                          version=opsets.get(node.domain, 1))(node, graph)
        except Exception as exc:  # converters raise NotImplementedError, KeyError, ...
            return i, node.proto, exc
    return None


def to_torch(model: onnx.ModelProto, path, *, needed_by: str = NEEDED_BY) -> fx.GraphModule:
    """``model`` as a torch module whose layers are named by their PyTorch path (see
    module doc). A node that cannot be converted is one ``ModelLoadError`` line naming
    the op and node, and ``needed_by`` (which techniques wanted the PyTorch form)."""
    mod = onnx2torch()
    if _TORCHVISION_STUBBED:
        for i, node in enumerate(model.graph.node):
            if node.op_type in TORCHVISION_OPS:
                raise _refuse(path, node.op_type, _node_label(node, i),
                              "it needs torchvision, which is not installed", needed_by)
    model = simplify(downgrade(model))
    drop_needless_allowzero(model)
    try:
        gm = mod.convert(model)
    except Exception as exc:  # converters raise NotImplementedError, KeyError, ...
        found = _culprit(model)
        if found is None:
            raise _refuse(path, "?", "?", _why(exc), needed_by) from None
        i, node, err = found
        raise _refuse(path, node.op_type, _node_label(node, i), _why(err), needed_by) from None
    return _renamed(gm, _torch_names(model))


def _torch_names(model: onnx.ModelProto) -> dict[str, str]:
    """onnx2torch's submodule name of each node -> its PyTorch path (``onnx_names``)."""
    from onnx2torch.onnx_graph import OnnxGraph

    return dict(zip(OnnxGraph(model.graph).nodes, layer_paths(model)))


def _renamed(gm: fx.GraphModule, names: dict[str, str]) -> fx.GraphModule:
    """``gm`` with its per-node submodules moved to ``names[old]`` (dotted paths)."""
    root: dict[str, object] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            new = names.get(node.target, node.target)
            root[new] = gm.get_submodule(node.target)
            node.target = new
        elif node.op == "get_attr":
            root[node.target] = _get_path(gm, node.target)
    out = fx.GraphModule(root, gm.graph, class_name="OnnxModel")
    _bake_integer_constants(out)
    return out.eval()


class _WithConstants(nn.Module):
    """An onnx2torch module called with its integer initializers (shapes, axes, pads,
    indices) inserted as plain tensors.

    onnx2torch's modules read those with ``.tolist()`` at run time. Passed in as graph
    buffers, torch.export fakes them, and the read becomes a data-dependent value it
    cannot trace; a plain attribute read in ``forward`` it bakes in as a constant.
    """

    def __init__(self, op: nn.Module, consts: dict[int, torch.Tensor], n_args: int) -> None:
        super().__init__()
        self.op = op
        self.consts = consts  # a dict, not buffers: see the class doc
        self.n_args = n_args

    def forward(self, *args, **kwargs):
        rest = iter(args)
        full = [self.consts[i] if i in self.consts else next(rest) for i in range(self.n_args)]
        return self.op(*full, **kwargs)


class _StaticReshape(nn.Module):
    """ONNX Reshape (allowzero=0) to a constant shape held as Python ints: onnx2torch's
    tests ``torch.any(shape == 0)``, a data-dependent branch torch.export cannot trace."""

    def __init__(self, shape: list[int]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.reshape(x, [x.shape[i] if d == 0 else d for i, d in enumerate(self.shape)])


class _StaticSlice(nn.Module):
    """ONNX Slice with constant starts/ends/axes/steps as Python slices: onnx2torch's calls
    ``.numpy()`` on them at run time, which torch.export's fake tensors refuse."""

    def __init__(self, consts: dict[int, torch.Tensor]) -> None:
        super().__init__()
        from onnx2torch.node_converters.slice import _get_slices

        ints = {i: [int(v) for v in t.tolist()] for i, t in consts.items()}
        axes = torch.tensor(ints[3]) if 3 in ints else None
        steps = torch.tensor(ints[4]) if 4 in ints else None
        flip, pos, neg = _get_slices(ints[1], ints[2], axes, steps)
        self.flip = [int(d) for d in flip]
        self.pos = [_int_slice(s) for s in pos]
        self.neg = [s if s is Ellipsis else _int_slice(s) for s in neg]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from onnx2torch.node_converters.slice import _do_slice

        return _do_slice(x, self.flip, self.pos, self.neg)


def _int_slice(s: slice) -> slice:
    def py(v):
        return None if v is None else int(v)

    return slice(py(s.start), py(s.stop), py(s.step))


def _static(op: nn.Module, consts: dict[int, torch.Tensor], n_args: int) -> nn.Module:
    name = type(op).__name__
    if name == "OnnxReshape" and set(consts) == {1} and n_args == 2:
        return _StaticReshape([int(d) for d in consts[1].tolist()])
    if name == "OnnxSlice" and set(consts) == set(range(1, n_args)):
        return _StaticSlice(consts)
    return _WithConstants(op, consts, n_args)


def _is_int_const(arg, gm: fx.GraphModule) -> bool:
    if not isinstance(arg, fx.Node) or arg.op != "get_attr":
        return False
    t = _get_path(gm, arg.target)
    return isinstance(t, torch.Tensor) and not t.is_floating_point() and not t.is_complex()


def _get_path(root: nn.Module, target: str):
    obj: object = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _bake_integer_constants(gm: fx.GraphModule) -> None:
    """Wrap each module that reads integer initializers in ``_WithConstants``."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        consts = {i: _get_path(gm, a.target).clone() for i, a in enumerate(node.args)
                  if _is_int_const(a, gm)}
        if not consts:
            continue
        owner_path, _, name = node.target.rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        setattr(owner, name, _static(getattr(owner, name), consts, len(node.args)))
        node.args = tuple(a for i, a in enumerate(node.args) if i not in consts)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
