"""A small ONNX graph builder with short names and de-duplicated constants.

Names are ``t<i>`` for tensors and ``c<i>`` for constants: an artifact should
cost its weights, not kilobytes of qualified layer names on every node.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# Models get the lowest IR version their opset allows (8 for 17, 10 for 21), so that
# older consumers load what they can; onnxruntime here loads IR <= 13.


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._const_cache: dict[tuple, str] = {}
        self._n_tensors = 0
        # Raised only by what needs it (packed or INT4 weights): an all-8-bit model
        # stays an opset 17 graph.
        self.opset = OPSET

    def fresh(self) -> str:
        self._n_tensors += 1
        return f"t{self._n_tensors}"

    def const(self, value: np.ndarray, *, dedupe: bool = True) -> str:
        """An initializer; identical small constants (scales, shapes, codebooks) are stored
        once."""
        value = np.asarray(value)
        key = None
        if dedupe and value.nbytes <= 256:
            key = (value.dtype.name, value.shape, value.tobytes())  # int4, uint4 share .str
            if key in self._const_cache:
                return self._const_cache[key]
        name = f"c{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(value, name))
        if key is not None:
            self._const_cache[key] = name
        return name

    def require_opset(self, opset: int) -> None:
        self.opset = max(self.opset, opset)

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.fresh() for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
              output_names: list[str]) -> onnx.ModelProto:
        # Rename the final tensors to the declared output names.
        rename = dict(zip(output_names, [o.name for o in outputs]))
        for node in self.nodes:
            node.output[:] = [rename.get(o, o) for o in node.output]
            node.input[:] = [rename.get(i, i) for i in node.input]
        graph = helper.make_graph(self.nodes, "edgeopt", inputs, outputs, self.initializers)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="edgeopt")
        model.ir_version = helper.find_min_ir_version_for(opsets)
        return model


def value_info(name: str, shape: list, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)
