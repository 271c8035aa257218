"""The graph passes that make an ONNX model convertible by onnx2torch: an opset it has
converters for, shape arithmetic folded to constants, no needless Reshape allowzero."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

# onnx2torch 1.5 has converters up to opset 17 (LayerNormalization-17 is its newest).
MAX_OPSET = 17


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
    if opset_versions(model).get("", 0) <= MAX_OPSET:
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


def opset_versions(model: onnx.ModelProto) -> dict[str, int]:
    return {o.domain if o.domain != "ai.onnx" else "": o.version for o in model.opset_import}
