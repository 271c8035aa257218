"""Per-layer summary of a model: name, type, parameters, MACs, output shape."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from edgeopt.core.canonical import canonical_copy
from edgeopt.core.graph import layer_name

aten = torch.ops.aten
_SHOWN_FUNCTIONS = {
    aten.add.Tensor: "Add", aten.mul.Tensor: "Mul", aten.cat.default: "Concat",
    aten.max_pool2d.default: "MaxPool", aten.avg_pool2d.default: "AvgPool",
    aten.adaptive_avg_pool2d.default: "GlobalAvgPool", aten.mean.dim: "Mean",
    aten.relu.default: "ReLU", aten.hardtanh.default: "Clip", aten.relu6.default: "ReLU6", aten.hardswish.default: "HardSwish",
    aten.sigmoid.default: "Sigmoid", aten.flatten.using_ints: "Flatten",
    aten.view.default: "Reshape", aten.reshape.default: "Reshape",
}


@dataclass
class LayerRow:
    name: str
    type: str
    params: int
    macs: int
    output_shape: tuple[int, ...]


def _macs(mod: nn.Module, out: torch.Tensor) -> int:
    if isinstance(mod, nn.Conv2d):
        kh, kw = mod.kernel_size
        return out[0].numel() * (mod.in_channels // mod.groups) * kh * kw
    if isinstance(mod, nn.Linear):
        return out[0].numel() * mod.in_features
    return 0


def inspect_model(model: nn.Module, input_shape: list[int]) -> list[LayerRow]:
    """Rows for every weight layer and visible operator, in execution order (batch 1)."""
    gm = canonical_copy(model, torch.zeros(2, *input_shape))
    shapes: dict[fx.Node, torch.Tensor] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            shapes[n] = out
            return out

    with torch.no_grad():
        Recorder(gm).run(torch.zeros(1, *input_shape))
    rows = []
    for node in gm.graph.nodes:
        out = shapes.get(node)
        if not isinstance(out, torch.Tensor):
            continue
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            params = sum(p.numel() for p in mod.parameters())
            rows.append(LayerRow(str(node.target), type(mod).__name__, params, _macs(mod, out),
                                 tuple(out.shape[1:])))
        elif node.op == "call_function" and node.target in _SHOWN_FUNCTIONS:
            rows.append(LayerRow(layer_name(node) or node.name, _SHOWN_FUNCTIONS[node.target], 0,
                                 0, tuple(out.shape[1:])))
    return rows


def format_rows(rows: list[LayerRow]) -> str:
    header = ("layer", "type", "params", "MACs", "output shape")
    body = [(r.name, r.type, f"{r.params:,}", f"{r.macs:,}", "x".join(map(str, r.output_shape)))
            for r in rows]
    total = ("total", "", f"{sum(r.params for r in rows):,}", f"{sum(r.macs for r in rows):,}", "")
    table = [header, *body, total]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for i, row in enumerate(table):
        cells = [c.ljust(w) if j < 2 or j == 4 else c.rjust(w)
                 for j, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0 or i == len(table) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
