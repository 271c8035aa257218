"""ONNX -> torch module with onnx2torch, for the techniques that need PyTorch.

The graph is simplified with onnxslim first (shape inference + constant
folding), so the Shape -> Gather -> Concat -> Reshape chains real exporters
emit become constants rather than shape arithmetic torch.export has to trace.
onnx2torch then builds an fx module with one submodule per ONNX node (real
``nn.Conv2d`` / ``nn.Linear`` where the weights are initializers), which we
rename to the PyTorch module path the exporter recorded ("layer1.conv1.0"), so
a model's layer names, and so its per-layer policies, are the same whether the
user hands us the ``.pt`` or the ``.onnx`` form (see ``onnx_names``).

The graph passes before the conversion are ``onnx_prepare``; the integer constants
baked into the converted modules for torch.export are ``onnx_torch_constants``.
"""

from __future__ import annotations

import contextlib
import re
import sys
import types

import onnx
import torch.fx as fx

from edgeopt.core.errors import ModelLoadError
from edgeopt.core.graph.rebuild import get_path
from edgeopt.core.onnx_names import layer_paths
from edgeopt.core.onnx_prepare import downgrade, drop_needless_allowzero, opset_versions, simplify
from edgeopt.core.onnx_torch_constants import bake_integer_constants

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

    opsets = opset_versions(model)
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
        try:
            found = _culprit(model)
        except Exception:  # noqa: BLE001 - the search itself can fail on a damaged graph
            found = None
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
            root[node.target] = get_path(gm, node.target)
    out = fx.GraphModule(root, gm.graph, class_name="OnnxModel")
    bake_integer_constants(out)
    return out.eval()
