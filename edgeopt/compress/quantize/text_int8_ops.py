"""Graph rewrites for transformer int8 (text_int8): a dynamic-int8 probe on chosen MatMul
inputs (to measure what quantizing them costs), weight-only int8 MatMul weights, and an
int8 embedding table with one scale per row."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(model.SerializeToString())


def tap(model: onnx.ModelProto, tensors: list[str], feeds: list[dict], session):
    """``(feed, [value of each tensor])`` per feed: ``model`` run with ``tensors`` added to
    its outputs (one session for all feeds)."""
    probe = copy(model)
    for t in tensors:
        probe.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    s = session(probe)
    for f in feeds:
        yield f, s.run(tensors, f)


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes whose second input is a 2-D weight initializer (the Linear layers);
    MatMuls between activations (Q.K^T, P.V) are not among them."""
    inits = {i.name: i for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul"
            and n.input[1] in inits and len(inits[n.input[1]].dims) == 2
            and n.input[0] not in inits]


def embedding_gathers(model: onnx.ModelProto, min_rows: int = 32) -> list[str]:
    """Gather nodes reading a large float table initializer (word and position embeddings)."""
    inits = {i.name: i for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "Gather"
            and n.input[0] in inits and len(inits[n.input[0]].dims) == 2
            and inits[n.input[0]].dims[0] >= min_rows
            and inits[n.input[0]].data_type == onnx.TensorProto.FLOAT]


def probe_dynamic(model: onnx.ModelProto, nodes: set[str]) -> onnx.ModelProto:
    """``model`` with the activation input of each of ``nodes`` quantized and dequantized
    as ORT's dynamic int8 does (DynamicQuantizeLinear: uint8, per tensor, per call);
    weights stay float, so the cost measured is the activations' alone."""
    m = copy(model)
    out = []
    for n in m.graph.node:
        if n.name in nodes:
            b = n.name
            out += [helper.make_node("DynamicQuantizeLinear", [n.input[0]],
                                     [b + "_aq", b + "_as", b + "_az"]),
                    helper.make_node("DequantizeLinear", [b + "_aq", b + "_as", b + "_az"],
                                     [b + "_adq"])]
            n.input[0] = b + "_adq"
        out.append(n)
    del m.graph.node[:]
    m.graph.node.extend(out)
    return m


def _int8(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 along ``axis`` (one scale per slice of the other axis)."""
    scale = np.abs(w).max(axis=axis) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    shape = [1, -1] if axis == 0 else [-1, 1]
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def weight_only(model: onnx.ModelProto, nodes: set[str]) -> onnx.ModelProto:
    """Each MatMul of ``nodes`` reads its weight as int8 with a scale per output column,
    through Cast and Mul: a quarter of the bytes on disk, float compute. Not
    DequantizeLinear: ORT 1.32 fuses DequantizeLinear -> MatMul into an 8-bit MatMulNBits,
    measured 3x slower than the float MatMul that Cast * scale constant-folds to at load."""
    m = copy(model)
    inits = {i.name: i for i in m.graph.initializer}
    out = []
    for n in m.graph.node:
        if n.name in nodes:
            t = inits[n.input[1]]
            q, scale = _int8(numpy_helper.to_array(t), axis=0)
            m.graph.initializer.remove(t)
            m.graph.initializer.extend([
                numpy_helper.from_array(q, t.name + "_int8"),
                numpy_helper.from_array(scale, t.name + "_scale")])
            out += [helper.make_node("Cast", [t.name + "_int8"], [t.name + "_f"],
                                     to=onnx.TensorProto.FLOAT, name=n.name + "_weight_cast"),
                    helper.make_node("Mul", [t.name + "_f", t.name + "_scale"], [t.name],
                                     name=n.name + "_weight_dq")]
        out.append(n)
    del m.graph.node[:]
    m.graph.node.extend(out)
    return m


def int8_embeddings(model: onnx.ModelProto, nodes: set[str]) -> onnx.ModelProto:
    """Each Gather of ``nodes`` reads int8 rows and multiplies them by their own row's
    scale (Gather the scales too): a table scale per row, because one scale for the whole
    table costs MiniLM's nearest neighbours several points, and the dequantization runs on
    the looked-up rows only, never on the 30,000-row table."""
    m = copy(model)
    inits = {i.name: i for i in m.graph.initializer}
    out = []
    for n in m.graph.node:
        if n.name not in nodes:
            out.append(n)
            continue
        t = inits[n.input[0]]
        q, scale = _int8(numpy_helper.to_array(t), axis=1)
        m.graph.initializer.remove(t)
        m.graph.initializer.extend([numpy_helper.from_array(q, t.name + "_int8"),
                                    numpy_helper.from_array(scale[:, None], t.name + "_rowscale")])
        b, y = n.name, n.output[0]
        out += [helper.make_node("Gather", [t.name + "_int8", n.input[1]], [b + "_q"], name=b,
                                 axis=0),
                helper.make_node("Cast", [b + "_q"], [b + "_f"], to=onnx.TensorProto.FLOAT,
                                 name=b + "_cast"),
                helper.make_node("Gather", [t.name + "_rowscale", n.input[1]], [b + "_s"],
                                 name=b + "_scale", axis=0),
                helper.make_node("Mul", [b + "_f", b + "_s"], [y], name=b + "_dq")]
    del m.graph.node[:]
    m.graph.node.extend(out)
    return m
