"""Naming and finding the layers of a canonical module."""

from __future__ import annotations

import torch.fx as fx
from torch import nn


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


def leaf_modules(gm: fx.GraphModule, types: tuple[type, ...] = (nn.Conv2d, nn.Linear)):
    """(name, module) of every call_module node whose module is of ``types``, in graph order."""
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if isinstance(mod, types):
                out.append((str(node.target), mod))
    return out
