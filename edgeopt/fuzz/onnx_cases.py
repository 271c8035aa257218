"""Case strategies of the ONNX loader: the seed model with protobuf fields damaged (an op
type, an attribute, the wiring, an initializer's shape, type or data, external data, the
graph's inputs, the opset), then sometimes byte-edited."""

from __future__ import annotations

from hypothesis import strategies as st

from edgeopt.fuzz import seeds
from edgeopt.fuzz.harness import Tree
from edgeopt.fuzz.mutate import EDGE_INTS, mutated

ONNX_OPS = ["Relu", "Conv", "Gemm", "MatMul", "Add", "Reshape", "Flatten", "Softmax",
            "MaxPool", "Identity", "If", "Loop", "NonMaxSuppression", "Gelu", "Bogus", ""]
ATTR_NAMES = ["axis", "pads", "strides", "kernel_shape", "group", "transB", "dilations",
              "alpha", "allowzero", "bogus"]
LOCATIONS = ["w.bin", "model.onnx", "../w.bin", "/etc/hostname", "sub/w.bin", "", "."]
_INTS = st.sampled_from(EDGE_INTS) | st.integers(-4, 40)


def _onnx_edits():
    """(draw, model) -> None edits of a ModelProto, each damaging one field."""
    from onnx import TensorProto, helper

    def pick(draw, seq):
        return seq[draw(st.integers(0, len(seq) - 1))] if len(seq) else None

    def op_type(draw, m):
        node = pick(draw, m.graph.node)
        if node is not None:
            node.op_type = draw(st.sampled_from(ONNX_OPS))

    def attribute(draw, m):
        node = pick(draw, m.graph.node)
        if node is None:
            return
        attr = pick(draw, node.attribute)
        if attr is not None and draw(st.booleans()):
            node.attribute.remove(attr)
            return
        value = draw(_INTS | st.lists(_INTS, max_size=5) | st.floats(width=32)
                     | st.text(max_size=4))
        if attr is not None:
            node.attribute.remove(attr)
        name = attr.name if attr is not None else draw(st.sampled_from(ATTR_NAMES))
        try:
            node.attribute.append(helper.make_attribute(name, value))
        except (ValueError, TypeError):  # an empty list has no type: leave it out
            pass

    def wiring(draw, m):
        node = pick(draw, m.graph.node)
        names = [n for nd in m.graph.node for n in (*nd.input, *nd.output)] + ["ghost", ""]
        if node is None:
            return
        edges = node.input if draw(st.booleans()) and len(node.input) else node.output
        if len(edges):
            edges[draw(st.integers(0, len(edges) - 1))] = draw(st.sampled_from(names))

    def nodes(draw, m):
        node = pick(draw, m.graph.node)
        if node is None:
            return
        kind = draw(st.sampled_from(["drop", "copy", "reverse"]))
        if kind == "drop":
            m.graph.node.remove(node)
        elif kind == "copy":
            m.graph.node.append(node)
        else:
            reordered = list(m.graph.node)[::-1]
            del m.graph.node[:]
            m.graph.node.extend(reordered)

    def initializer(draw, m):
        init = pick(draw, m.graph.initializer)
        if init is None:
            return
        kind = draw(st.sampled_from(["dims", "dtype", "data", "external"]))
        if kind == "dims":
            del init.dims[:]
            init.dims.extend(draw(st.lists(st.integers(0, 64) | st.sampled_from(EDGE_INTS[:9]),
                                           max_size=4)))
        elif kind == "dtype":
            init.data_type = draw(st.integers(0, 25))
        elif kind == "data":
            init.raw_data = draw(mutated(init.raw_data))
        else:
            init.ClearField("raw_data")
            init.data_location = TensorProto.EXTERNAL
            for key, value in (("location", draw(st.sampled_from(LOCATIONS))),
                               ("offset", str(draw(_INTS))), ("length", str(draw(_INTS)))):
                entry = init.external_data.add()
                entry.key, entry.value = key, value

    def graph_io(draw, m):
        value = pick(draw, [*m.graph.input, *m.graph.output])
        kind = draw(st.sampled_from(["dtype", "dim", "rank", "name"]))
        tensor = value.type.tensor_type
        if kind == "dtype":
            tensor.elem_type = draw(st.integers(0, 25))
        elif kind == "dim" and len(tensor.shape.dim):
            dim = tensor.shape.dim[draw(st.integers(0, len(tensor.shape.dim) - 1))]
            if draw(st.booleans()):
                dim.dim_value = draw(st.integers(-2, 2**40))
            else:
                dim.dim_param = draw(st.text(max_size=3))
        elif kind == "rank":
            if len(tensor.shape.dim) and draw(st.booleans()):
                del tensor.shape.dim[-1]
            else:
                tensor.shape.dim.add().dim_value = draw(st.integers(0, 8))
        else:
            value.name = draw(st.sampled_from(["ghost", "", "w", "logits", "input"]))

    def opset(draw, m):
        entry = m.opset_import[0] if len(m.opset_import) else m.opset_import.add()
        entry.version = draw(st.integers(-1, 30))
        if draw(st.integers(0, 3)) == 0:
            entry.domain = draw(st.sampled_from(["ai.onnx", "com.microsoft", "bogus"]))

    def ir_version(draw, m):
        m.ir_version = draw(st.integers(-1, 13))

    return [op_type, attribute, attribute, wiring, nodes, initializer, initializer,
            graph_io, opset, ir_version]


@st.composite
def onnx_cases(draw) -> Tree:
    import onnx

    model = onnx.ModelProto.FromString(seeds.onnx_model())
    edits = _onnx_edits()
    for _ in range(draw(st.integers(0, 3))):
        draw(st.sampled_from(edits))(draw, model)
    data = model.SerializeToString()
    files = {"model.onnx": draw(st.just(data) | mutated(data, max_edits=2))}
    if draw(st.booleans()):
        files["w.bin"] = draw(st.binary(max_size=256))
    return Tree(files, "model.onnx")
