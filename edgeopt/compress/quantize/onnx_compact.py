"""Smaller QDQ files with the same meaning and the same fused kernels.

onnxruntime's quantizer writes, for every int8 Conv, an int8 zero point per weight
channel, an int32 zero point and a float scale per bias channel, and a named node per
Q/DQ. On a depthwise CNN those add ~9 bytes per channel to the 8 (scale + int32 bias) an
int8 artifact needs: MobileNetV2's ONNX form came out 1.25x the int8 floor. This pass
removes what the model does not need, keeping every value exactly:

- an all-zero zero point of a constant int8/int32 DequantizeLinear read only by Conv is
  dropped (ONNX's default zero point is 0 of the input's type). Only for Conv: ORT's
  QGemm/MatMul fusions require the zero point to be present, its QLinearConv fusion
  does not (tests/compress/quantize/test_onnx_compact.py checks the fused graph);
- a Conv bias's DequantizeLinear scale, which ORT's quantizer sets to x_scale * w_scale,
  becomes Mul(x_scale, w_scale) when that product is bit-identical; ORT folds the Mul
  at load, before its QDQ fusions;
- the names of the nodes the quantizer added (names are optional in ONNX).

``short_names`` (run by ``onnx_ptq`` before weight-only int8 and this pass) shortens the
tensor names the quantizer added, which this pass keeps.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
from onnx import numpy_helper

from edgeopt.core.onnx_graph import subgraphs

DROP_ZP_CONSUMERS = frozenset({"Conv"})


def compact_qdq(model: onnx.ModelProto, *, keep_names: set[str] = frozenset()) -> dict:
    """Rewrite ``model`` in place; returns bytes saved per rewrite."""
    graph = model.graph
    before = model.ByteSize()
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for n in graph.node:
        for t in n.input:
            readers[t].append(n)
    outputs = {v.name for v in graph.output}

    def dq(name: str) -> onnx.NodeProto | None:
        n = producer.get(name)
        return n if n is not None and n.op_type == "DequantizeLinear" else None

    # Bias scales first: they read the zero points' neighbours, not the zero points.
    muls, bias_scales = [], 0
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 3 or not node.input[2]:
            continue
        dqx, dqw, dqb = (dq(t) for t in node.input[:3])
        if dqx is None or dqw is None or dqb is None:
            continue
        names = (dqx.input[1], dqw.input[1], dqb.input[1])
        if not all(t in inits for t in names) or len(readers[names[2]]) != 1:
            continue
        xs, ws, bs = (numpy_helper.to_array(inits[t]) for t in names)
        if bs.dtype != np.float32 or not np.array_equal(bs, (xs * ws).astype(np.float32)):
            continue
        graph.initializer.remove(inits.pop(names[2]))
        muls.append(onnx.helper.make_node("Mul", [names[0], names[1]], [names[2]]))
        bias_scales += 1

    zero_points = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) != 3:
            continue
        x, zp = node.input[0], node.input[2]
        if x not in inits or zp not in inits or node.output[0] in outputs:
            continue
        if not {r.op_type for r in readers[node.output[0]]} <= DROP_ZP_CONSUMERS:
            continue
        z = numpy_helper.to_array(inits[zp])
        if z.dtype not in (np.int8, np.int32) or z.any():
            continue
        del node.input[2]
        zero_points += 1

    renamed = 0
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.name \
                and node.name not in keep_names:
            node.name = ""
            renamed += 1
    if muls:
        rest = list(graph.node)
        del graph.node[:]
        graph.node.extend(muls + rest)
    used = _reads(graph) | outputs
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return {"bias_scales_as_mul": bias_scales, "zero_points_dropped": zero_points,
            "qdq_names_dropped": renamed, "bytes_saved": before - model.ByteSize()}


def _reads(graph: onnx.GraphProto) -> set[str]:
    """Every tensor a node reads, in the graph and in its If/Loop/Scan bodies."""
    out: set[str] = set()
    for n in graph.node:
        out.update(n.input)
        for g in subgraphs(n):
            out |= _reads(g)
    return out


def short_names(q: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Rename, in place, the tensors and nodes the quantizer added ("<tensor>_DequantizeLinear
    _Output", ...): on small models those names weigh as much as the int8 weights."""
    keep = {n.name for n in original.graph.node}
    keep |= {t for n in original.graph.node for t in (*n.input, *n.output)}
    keep |= {i.name for i in original.graph.initializer}
    keep |= {v.name for v in (*q.graph.input, *q.graph.output)}
    new: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return new.setdefault(name, f"q{len(new)}")

    for i, node in enumerate(q.graph.node):
        # The node's position makes its new name unique (a tensor count need not move).
        node.name = node.name if node.name in keep else f"qn{i}_{node.op_type}"
        node.input[:] = [short(t) for t in node.input]
        node.output[:] = [short(t) for t in node.output]
    for init in q.graph.initializer:
        init.name = short(init.name)
    for vi in q.graph.value_info:
        vi.name = short(vi.name)
