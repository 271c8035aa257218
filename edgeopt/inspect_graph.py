"""``edgeopt inspect`` for an ONNX file: per-node table, op histogram, and what each recipe
would quantize, read off the simplified graph without running it (any model, any inputs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edgeopt.compress.quantize.onnx_config import WEIGHT_OPS, OnnxQuantConfig
from edgeopt.core.onnx_graph import describe, load_graph, op_histogram


@dataclass
class NodeRow:
    name: str
    op: str
    params: int
    output_shape: str
    int8: str  # what the int8 recipe does with it: "int8", "float" (and why)


def _shapes(model: onnx.ModelProto) -> dict[str, str]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inspection shows what it can
        inferred = model
    out = {}
    for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
        dims = [d.dim_param or (str(d.dim_value) if d.dim_value else "?")
                for d in v.type.tensor_type.shape.dim]
        out[v.name] = "x".join(dims) if dims else "scalar"
    return out


def inspect_graph(path: str) -> tuple[list[NodeRow], dict[str, int], dict]:
    """(rows, op histogram, summary) of the ONNX file as the graph path sees it."""
    model = load_graph(path)
    inits = {i.name: int(np.prod(i.dims)) if i.dims else 1 for i in model.graph.initializer}
    # Constant nodes hold weights too in some exporters (Paddle).
    consts = {o: int(numpy_helper.to_array(a.t).size) for n in model.graph.node
              if n.op_type == "Constant" for a in n.attribute if a.name == "value"
              for o in n.output}
    shapes = _shapes(model)
    quantizable = set(OnnxQuantConfig().op_types)
    rows = []
    for i, node in enumerate(model.graph.node):
        params = sum(inits.get(t, 0) + consts.get(t, 0) for t in node.input)
        if node.op_type in WEIGHT_OPS:
            plan = "int8 (weights + activations)"
        elif node.op_type in quantizable:
            plan = "int8 if it pays on this CPU"
        else:
            plan = "float (passed through)"
        rows.append(NodeRow(node.name or f"#{i}", node.op_type, params,
                            shapes.get(node.output[0], "?") if node.output else "", plan))
    inputs, outputs = describe(model)
    summary = {
        "inputs": [(t.name, t.dtype, t.shape) for t in inputs],
        "outputs": [(t.name, t.dtype, t.shape) for t in outputs],
        "params": sum(inits.values()) + sum(consts.values()),
        "recipes": {
            "int8 / fp32 (ONNX-graph path)": "quantizes " + ", ".join(
                sorted({r.op for r in rows if r.op in WEIGHT_OPS})) + "; other ops as they pay",
            "other recipes (torch path via onnx2torch)": "every torch technique; needs every "
                                                         "op to convert",
        },
    }
    return rows, op_histogram(model), summary


def format_graph(rows: list[NodeRow], hist: dict[str, int], summary: dict) -> str:
    header = ("node", "op", "params", "output shape", "int8 recipe")
    body = [(r.name, r.op, f"{r.params:,}", r.output_shape, r.int8) for r in rows]
    table = [header, *body]
    widths = [min(48, max(len(row[i]) for row in table)) for i in range(len(header))]
    lines = ["  ".join(c[:w].ljust(w) if j != 2 else c.rjust(w)
                       for j, (c, w) in enumerate(zip(row, widths))).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["", "inputs:  " + "; ".join(f"{n} {d} {s}" for n, d, s in summary["inputs"]),
              "outputs: " + "; ".join(f"{n} {d} {s}" for n, d, s in summary["outputs"]),
              f"parameters: {summary['params']:,}", "",
              "ops: " + ", ".join(f"{op} {n}" for op, n in hist.items()), ""]
    lines += [f"{k}: {v}" for k, v in summary["recipes"].items()]
    return "\n".join(lines)
