"""PyTorch module paths for the nodes of an ONNX graph.

Exporters record where each node came from, each in its own way:
  - a weight initializer named after the parameter ("layer1.conv1.0.weight"),
    by both torch exporters when the weight is not folded;
  - the dynamo exporter's ``pkg.torch.onnx.name_scopes`` metadata,
    ``['', 'layer1', 'layer1.conv1', 'layer1.conv1.1', 'op']``;
  - the TorchScript exporter's node name ``/layer1/conv1/conv1.0/Conv``, one
    scope per module call, where a Sequential's child repeats its parent's name.
Naming layers by that path makes an ONNX file's layer names those of the torch
model it was exported from, so per-layer policies carry over; a hand-built
graph keeps its node names. Paths are unique and no path is both a layer and a
container of layers (``fx.GraphModule`` nests them as submodules).
"""

from __future__ import annotations

import ast
import re

import onnx
import torch.fx as fx
from torch import nn

# Ops whose weight makes them a layer (lifted to nn.Conv2d / nn.Linear / ...): they get the
# plain path; other ops take "<path>.<op>" when a layer holds it.
WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization",
            "LayerNormalization", "InstanceNormalization", "LSTM", "GRU", "RNN"}
# Attribute names a submodule must not shadow.
_RESERVED = set(dir(fx.GraphModule)) | set(dir(nn.Module())) | {"initializers"}


def _part(s: str) -> str:
    s = re.sub(r"\W", "_", s).strip("_")
    return s + "_" if s in _RESERVED else s


def _clean(path: str) -> str:
    return ".".join(p for p in (_part(s) for s in path.split(".")) if p)


def _from_scopes(node: onnx.NodeProto) -> str | None:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            # ['', module paths..., the aten op]: the innermost module is the path.
            return scopes[-2] if len(scopes) >= 3 else ""
    return None


def _from_scoped_name(name: str) -> str | None:
    if not name.startswith("/"):
        return None
    path: list[str] = []
    for scope in name.strip("/").split("/")[:-1]:
        if path and scope.startswith(path[-1] + "."):
            path[-1] = scope  # "conv1" then "conv1.0": the Sequential's child
        else:
            path.append(scope)
    return ".".join(path)


def node_path(node: onnx.NodeProto, inits: set[str]) -> str:
    """Where ``node`` came from in the torch model, or its own name ('' when unknown)."""
    if node.op_type in WEIGHTED and len(node.input) > 1:
        w = node.input[1]
        if w in inits and w.endswith(".weight") and "::" not in w:
            return _clean(w[: -len(".weight")])
    for found in (_from_scopes(node), _from_scoped_name(node.name)):
        if found is not None:
            return _clean(found)
    return _clean(node.name)


class _Paths:
    """Taken layer paths and their containers, so a new path never nests under a layer
    or over one."""

    def __init__(self) -> None:
        self.leaves: set[str] = set()
        self.containers: set[str] = set()

    def free(self, path: str) -> bool:
        parts = path.split(".")
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts))}
        return path not in self.leaves and path not in self.containers \
            and not prefixes & self.leaves

    def take(self, path: str) -> str:
        parts = path.split(".")
        self.leaves.add(path)
        self.containers |= {".".join(parts[:i]) for i in range(1, len(parts))}
        return path


def layer_paths(model: onnx.ModelProto) -> list[str]:
    """One unique dotted path per node of ``model.graph``, in node order."""
    inits = {i.name for i in model.graph.initializer}
    nodes = list(model.graph.node)
    paths = [node_path(n, inits) for n in nodes]
    taken = _Paths()
    out: list[str | None] = [None] * len(nodes)
    # Layers first: they get the plain path, the ops around them the suffixed ones; deeper
    # paths before shallower, so "layer1" is known to be a container before its Add asks.
    order = sorted(range(len(nodes)),
                   key=lambda i: (nodes[i].op_type not in WEIGHTED, -paths[i].count(".")))
    for i in order:
        op = _part(nodes[i].op_type.lower()) or "op"
        base = paths[i]
        # A flat name has no container to clash with, so one of these is always free.
        flat = f"{base.replace('.', '_')}_{op}" if base else op
        candidates = ([base, f"{base}.{op}"] if base else []) + [flat]
        name = next((c for c in candidates if taken.free(c)), None)
        k = 1
        while name is None:
            name = f"{flat}_{k}" if taken.free(f"{flat}_{k}") else None
            k += 1
        out[i] = taken.take(name)
    return out
