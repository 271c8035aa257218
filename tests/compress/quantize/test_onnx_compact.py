"""compact_qdq: a smaller QDQ file that computes the same values with the same fused kernels."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from torch import nn

from edgeopt.compress.quantize.onnx_compact import compact_qdq
from edgeopt.compress.quantize.onnx_qdq import _Reader  # ORT's calibration protocol over a list
from edgeopt.core.ort_options import session_options


class DepthwiseNet(nn.Module):
    """MobileNet-shaped: depthwise + pointwise convs with biases, a residual Add, a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pw = nn.Conv2d(32, 32, 1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        y = y + self.pw(torch.relu(self.dw(y)))
        return self.head(y.mean(dim=(2, 3)))


def _qdq(tmp_path) -> onnx.ModelProto:
    torch.manual_seed(0)
    fp = tmp_path / "fp.onnx"
    torch.onnx.export(DepthwiseNet().eval(), (torch.randn(1, 3, 8, 8),), str(fp), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["y"])
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    out = tmp_path / "q.onnx"
    quantize_static(str(fp), str(out), _Reader(feeds), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, extra_options={"WeightSymmetric": True})
    return onnx.load(out)


def _fused_ops(model: onnx.ModelProto, path) -> tuple[ort.InferenceSession, collections.Counter]:
    """The session and the op histogram of the graph ORT actually runs."""
    so = session_options()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(path)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess, collections.Counter(n.op_type for n in onnx.load(path).graph.node)


def test_same_values_same_fused_kernels_fewer_bytes(tmp_path):
    q = _qdq(tmp_path)
    small = onnx.ModelProto.FromString(q.SerializeToString())
    record = compact_qdq(small)
    onnx.checker.check_model(small)
    # Three Conv biases, six Conv zero points (weight + bias); the Gemm keeps its own.
    assert record["bias_scales_as_mul"] == 3
    assert record["zero_points_dropped"] == 6
    assert record["bytes_saved"] == q.ByteSize() - small.ByteSize() > 32 * 3 * 4
    sess_a, ops_a = _fused_ops(q, tmp_path / "a.onnx")
    sess_b, ops_b = _fused_ops(small, tmp_path / "b.onnx")
    assert ops_a["QLinearConv"] == 3 and ops_a["QGemm"] == 1
    assert ops_b == ops_a  # the same integer kernels after ORT's fusions
    x = {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    np.testing.assert_array_equal(sess_a.run(None, x)[0], sess_b.run(None, x)[0])


def test_leaves_nonzero_zero_points_and_foreign_scales(tmp_path):
    q = _qdq(tmp_path)
    inits = {i.name: i for i in q.graph.initializer}
    conv = next(n for n in q.graph.node if n.op_type == "Conv")
    producer = {o: n for n in q.graph.node for o in n.output}
    dqw, dqb = producer[conv.input[1]], producer[conv.input[2]]
    zp = numpy_helper.to_array(inits[dqw.input[2]]).copy()
    zp[0] = 1  # not all zero: must stay
    inits[dqw.input[2]].CopyFrom(numpy_helper.from_array(zp, dqw.input[2]))
    bs = numpy_helper.to_array(inits[dqb.input[1]]) * 2  # not x_scale * w_scale: must stay
    inits[dqb.input[1]].CopyFrom(numpy_helper.from_array(bs, dqb.input[1]))
    record = compact_qdq(q)
    assert record["bias_scales_as_mul"] == 2 and record["zero_points_dropped"] == 5
    assert len(dqw.input) == 3 and dqb.input[1] in {i.name for i in q.graph.initializer}
