"""load_graph keeps outputs identical while folding shape chains and bound control flow."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgeopt.core.errors import DataError, ModelLoadError
from edgeopt.core.onnx_graph import describe, load_graph, max_ir_version, op_histogram


class ShapeNet(nn.Module):
    """conv -> split -> reshape by a runtime shape (Shape->Gather->Concat->Reshape),
    GRU over the flattened features, LayerNorm/GELU(Erf)/Softmax/activation MatMul."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gru = nn.GRU(16, 16, batch_first=True)
        self.norm = nn.LayerNorm(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.conv(x), 4, dim=1)
        y = (a * torch.sigmoid(b)).reshape(x.shape[0], -1, 16)
        y, _ = self.gru(y)
        y = nn.functional.gelu(self.norm(y))
        attn = torch.softmax(y @ y.transpose(1, 2), dim=-1)
        return attn @ y


def _export(module: nn.Module, path, opset: int) -> None:
    torch.onnx.export(module.eval(), (torch.randn(2, 3, 4, 4),), str(path), dynamo=False,
                      opset_version=opset, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})


def _run(model_or_path, feed):
    blob = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) \
        else str(model_or_path)
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.mark.parametrize("opset", [11, 17])
def test_slimmed_graph_matches_original(tmp_path, opset):
    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    _export(ShapeNet(), path, opset)
    model = load_graph(path)
    before = op_histogram(onnx.load(str(path)))
    after = op_histogram(model)
    assert "GRU" in after and "MatMul" in after
    assert sum(after.values()) < sum(before.values())  # something was folded
    feed = {"x": np.random.default_rng(0).standard_normal((3, 3, 4, 4)).astype(np.float32)}
    (want,), (got,) = _run(path, feed), _run(model, feed)
    assert got.shape == want.shape == (3, 4, 16)
    assert np.abs(got - want).max() < 1e-5
    (inp,), (out,) = describe(model)
    assert inp.dtype == "float32" and isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 4, 4]
    assert out.name == "y"


def _if_model() -> onnx.ModelProto:
    """y = sr == 16000 ? x * 2 : x + 100 (the shape of silero-vad's top level)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])

    def branch(op, const, name):
        c = numpy_helper.from_array(np.array(const, np.float32), f"c_{name}")
        out = helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, None)
        return helper.make_graph([helper.make_node(op, ["x", f"c_{name}"], [f"y_{name}"])],
                                 name, [], [out], [c])

    k = numpy_helper.from_array(np.array(16000, np.int64), "k")
    nodes = [helper.make_node("Equal", ["sr", "k"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("Mul", 2.0, "then"),
                              else_branch=branch("Add", 100.0, "else"))]
    graph = helper.make_graph(nodes, "g", [x, sr], [y], [k])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_if_folds_when_its_input_is_bound(tmp_path):
    path = tmp_path / "if.onnx"
    onnx.save(_if_model(), path)
    model = load_graph(path, fixed={"sr": np.array(16000, np.int64)})
    assert "If" not in op_histogram(model)
    assert [i.name for i in describe(model)[0]] == ["x"]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    (want,) = _run(path, {"x": x, "sr": np.array(16000, np.int64)})
    (got,) = _run(model, {"x": x})
    np.testing.assert_array_equal(got, want)
    assert "If" in op_histogram(load_graph(path))  # unbound: the branch stays


def test_bad_inputs_are_one_line_errors(tmp_path):
    path = tmp_path / "if.onnx"
    onnx.save(_if_model(), path)
    with pytest.raises(DataError, match="'rate'.*inputs are x, sr"):
        load_graph(path, fixed={"rate": np.array(1, np.int64)})
    with pytest.raises(DataError, match="takes int64, got float32"):
        load_graph(path, fixed={"sr": np.array(1.0, np.float32)})
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        load_graph(bad)


def test_newer_ir_is_lowered_to_what_onnxruntime_loads(tmp_path):
    model = _if_model()
    model.ir_version = onnx.IR_VERSION
    path = tmp_path / "new.onnx"
    onnx.save(model, path)
    loaded = load_graph(path, slim=False)
    assert loaded.ir_version <= max_ir_version()
    _run(loaded, {"x": np.ones((1, 4), np.float32), "sr": np.array(8000, np.int64)})


def test_silero_vad_if_folds_to_the_16khz_branch():
    from edgeopt.zoo.thirdparty import thirdparty_model

    try:
        path = thirdparty_model("silero-vad")
    except ModelLoadError as exc:
        pytest.skip(str(exc))
    sr = np.array(16000, np.int64)
    model = load_graph(path, fixed={"sr": sr})
    assert "LSTM" in op_histogram(model) and "Equal" in op_histogram(model)
    rng = np.random.default_rng(0)
    feed = {"input": (rng.standard_normal((1, 512)) * 0.1).astype(np.float32),
            "state": np.zeros((2, 1, 128), np.float32)}
    want = _run(path, {**feed, "sr": sr})
    got = _run(model, feed)
    for w, g in zip(want, got):
        assert np.abs(w - g).max() < 1e-5


def test_load_graph_is_byte_identical_across_processes(tmp_path):
    """onnxslim's symbolic shape inference spelled dims differently run to run (and
    wrote each tensor's value_info several times): yolov8n came out ~130 KB apart."""
    import subprocess
    import sys

    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    _export(ShapeNet(), path, 17)
    script = ("import sys, hashlib; from edgeopt.core.onnx_graph import load_graph; "
              "b = load_graph(sys.argv[1]).SerializeToString(); "
              "print(len(b), hashlib.sha256(b).hexdigest())")
    runs = [subprocess.run([sys.executable, "-c", script, str(path)], check=True,
                           capture_output=True, text=True).stdout.split()[-2:]
            for _ in range(2)]
    assert runs[0] == runs[1]
    model = load_graph(path)
    names = [v.name for v in model.graph.value_info]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("opset,fused", [(11, ["HardSigmoid", "Mul"]), (14, ["HardSwish"])])
def test_decomposed_hardswish_is_fused(tmp_path, opset, fused):
    """Paddle's x * Clip(x + 3, 0, 6) / 6 (ppocr-cls) becomes one or two ops."""
    c = {k: numpy_helper.from_array(np.array(v, np.float32), k)
         for k, v in {"three": 3.0, "zero": 0.0, "six": 6.0}.items()}
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 2, 1, 1))
                                .astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], name="conv"),
             helper.make_node("Add", ["h", "three"], ["a"], name="add"),
             helper.make_node("Clip", ["a", "zero", "six"], ["c"], name="clip"),
             helper.make_node("Mul", ["h", "c"], ["m"], name="mul"),
             helper.make_node("Div", ["m", "six"], ["y"], name="div")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 3, 3])],
        initializer=[*c.values(), w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    path = tmp_path / "hs.onnx"
    onnx.save(model, path)
    slim = load_graph(path)
    assert sorted(op_histogram(slim)) == sorted(["Conv", *fused])
    feed = {"x": (4 * np.random.default_rng(1).standard_normal((2, 2, 3, 3))).astype(np.float32)}
    (want,), (got,) = _run(path, feed), _run(slim, feed)
    np.testing.assert_allclose(got, want, atol=1e-5)
