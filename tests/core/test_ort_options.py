"""edgeopt's ONNX Runtime sessions compute int8 products exactly on every x86 CPU."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgeopt.compile.backends.onnxruntime.runtime import make_session
from edgeopt.core.ort_options import X64_QUANT_PRECISION, session_options
from edgeopt.runtime.cpu import cpu_flags

RNG = np.random.default_rng(0)
# Full-range int8 weights against activations near 255: the products VPMADDUBSW's int16
# pair sums overflow on (127 * 255 * 2 > 32767).
W_MM = RNG.integers(-127, 128, (256, 64)).astype(np.int8)
W_CONV = RNG.integers(-127, 128, (16, 16, 3, 3)).astype(np.int8)
X_MM = RNG.integers(200, 256, (8, 256)).astype(np.uint8)
X_CONV = RNG.integers(200, 256, (2, 16, 8, 8)).astype(np.uint8)
SCALE_OUT = 1000.0


def _model(nodes, x_shape, inits, y_type):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8,
                                                                     x_shape)],
                          [helper.make_tensor_value_info("y", y_type, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def _qlinear_inits(w):
    return {"W": w, "xs": np.array(1.0, np.float32), "xz": np.array(0, np.uint8),
            "ws": np.array(1.0, np.float32), "wz": np.array(0, np.int8),
            "ys": np.array(SCALE_OUT, np.float32), "yz": np.array(128, np.uint8)}


QL = ["x", "xs", "xz", "W", "ws", "wz", "ys", "yz"]
CASES = {
    "MatMulInteger": (
        _model([helper.make_node("MatMulInteger", ["x", "W", "xz"], ["y"])], [None, 256],
               {"W": W_MM, "xz": np.array(0, np.uint8)}, TensorProto.INT32),
        X_MM, X_MM.astype(np.int64) @ W_MM.astype(np.int64)),
    "QLinearMatMul": (
        _model([helper.make_node("QLinearMatMul", QL, ["y"])], [None, 256],
               _qlinear_inits(W_MM), TensorProto.UINT8),
        X_MM, np.clip(np.round(X_MM.astype(np.int64) @ W_MM.astype(np.int64) / SCALE_OUT)
                      + 128, 0, 255)),
    "QLinearConv": (
        _model([helper.make_node("QLinearConv", QL, ["y"], pads=[1, 1, 1, 1])],
               [None, 16, 8, 8], _qlinear_inits(W_CONV), TensorProto.UINT8),
        X_CONV, np.clip(np.round(torch.nn.functional.conv2d(
            torch.tensor(X_CONV, dtype=torch.float64), torch.tensor(W_CONV, dtype=torch.float64),
            padding=1).numpy() / SCALE_OUT) + 128, 0, 255)),
}


def _error(session, x, exact):
    return float(np.abs(session.run(None, {"x": x})[0].astype(np.int64) - exact).max())


@pytest.mark.parametrize("op", sorted(CASES))
def test_int8_products_are_exact(op):
    model, x, exact = CASES[op]
    # The QLinear ops requantize in float32: one output step off where the exact value sits
    # on a rounding boundary. The integer products themselves are exact.
    assert _error(make_session(model), x, exact) <= (0 if op == "MatMulInteger" else 1)


def _saturating_x86() -> bool:
    flags = cpu_flags() or set()
    return "avx2" in flags and not {"avx512_vnni", "avx_vnni", "amx_int8"} & flags


@pytest.mark.skipif(not _saturating_x86(), reason="this CPU's int8 kernels do not saturate")
@pytest.mark.parametrize("op", sorted(CASES))
def test_without_the_option_this_cpu_saturates(op):
    # What the option is for: the same session without it is wrong here, by far more than
    # rounding (output steps for the QLinear ops, int32 units for MatMulInteger).
    model, x, exact = CASES[op]
    plain = ort.InferenceSession(model, session_options(exact_int8=False),
                                 providers=["CPUExecutionProvider"])
    assert _error(plain, x, exact) >= 10


def test_every_session_sets_it():
    assert session_options().get_session_config_entry(X64_QUANT_PRECISION) == "1"
    assert session_options(2).intra_op_num_threads == 2
