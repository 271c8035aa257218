import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import edgeopt
from edgeopt.core.errors import ModelLoadError
from edgeopt.core.onnx_import import input_shape, load_onnx

INPUT_SHAPE = [1, 8, 8]


def _save(tmp_path, nodes, inits, *, in_shape, out_shape, name="m.onnx"):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(model, path)
    return str(path)


def test_hand_built_gemm_relu_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 6)).astype(np.float32)  # transB=1: (out, in)
    b = rng.standard_normal(5).astype(np.float32)
    path = _save(tmp_path, [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc", transB=1),
        helper.make_node("Relu", ["h"], ["y"], name="act"),
    ], {"w": w, "b": b}, in_shape=["N", 6], out_shape=["N", 5])

    module, shape = load_onnx(path)
    assert shape == [6]
    # Weights become parameters of a submodule named after the ONNX node.
    assert dict(module.named_parameters()).keys() == {"fc.weight", "fc.bias"}
    x = rng.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(),
                               np.maximum(x @ w.T + b, 0), atol=1e-5)


def test_exported_cnn_round_trips_with_named_layers(tmp_path, tiny_cnn):
    edgeopt.compile(tiny_cnn, target="x86_64", input_shape=INPUT_SHAPE, out=tmp_path / "a")
    module, shape = load_onnx(str(tmp_path / "a" / "model.onnx"))
    assert shape == INPUT_SHAPE
    x = torch.randn(5, *INPUT_SHAPE)
    np.testing.assert_allclose(module(x).detach().numpy(), tiny_cnn(x).detach().numpy(),
                               atol=1e-4)
    # BN was folded by compile: one conv weight and one linear weight remain.
    weights = [n for n, p in module.named_parameters() if n.endswith(".weight")]
    assert len(weights) == 2


def test_unsupported_operator_names_op_and_node(tmp_path):
    path = _save(tmp_path, [helper.make_node("Erf", ["x"], ["y"], name="my_erf")], {},
                 in_shape=["N", 3], out_shape=["N", 3])
    with pytest.raises(ModelLoadError, match="Erf") as exc:
        load_onnx(path)
    assert "my_erf" in str(exc.value)


def test_invalid_model_is_refused_with_its_path(tmp_path):
    # A Relu reading a tensor nothing produces: the checker rejects the graph.
    path = _save(tmp_path, [helper.make_node("Relu", ["ghost"], ["y"])], {},
                 in_shape=["N", 3], out_shape=["N", 3])
    with pytest.raises(ModelLoadError, match="not a valid ONNX model") as exc:
        load_onnx(path)
    assert path in str(exc.value) and "\n" not in str(exc.value)


def test_symbolic_spatial_dims_declare_no_shape(tmp_path):
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], {},
                 in_shape=["N", 1, "H", "W"], out_shape=["N", 1, "H", "W"])
    assert input_shape(onnx.load(path)) is None


def test_unsupported_attribute_is_refused_at_load(tmp_path):
    w = np.ones((2, 1, 3, 3), np.float32)
    path = _save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], name="c",
                                             pads=[0, 0, 1, 1], kernel_shape=[3, 3])],
                 {"w": w}, in_shape=["N", 1, 8, 8], out_shape=["N", 2, 7, 7])
    with pytest.raises(ModelLoadError, match="padding"):
        load_onnx(path)
