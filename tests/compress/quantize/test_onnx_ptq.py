"""quantize_graph: int8 weights where ORT runs integer kernels, the rest untouched in float."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgeopt.compress.quantize import onnx_hw
from edgeopt.compress.quantize.onnx_ptq import OnnxQuantConfig, head_levels, quantize_graph
from edgeopt.core.errors import ConfigError, ExportError, ModelLoadError
from edgeopt.core.onnx_graph import load_graph, op_histogram

FAST = dict(hardware_aware=False, accuracy_aware=False)


class ConvNet(nn.Module):
    """Conv-heavy with an Erf (GELU) and a LayerNorm that have no int8 kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.GELU(),
        )
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        y = self.body(x).mean(dim=(2, 3))
        return self.head(self.norm(y))


def _graph(tmp_path, module, shape, opset=17):
    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    torch.onnx.export(module.eval(), (torch.randn(*shape),), str(path), dynamo=False,
                      opset_version=opset, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}})
    return load_graph(path)


def _calib(shape, n=8):
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def _inits(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_conv_weights_int8_untouched_ops_float_and_sqnr(tmp_path):
    model = _graph(tmp_path, ConvNet(), (1, 3, 16, 16))
    calib = _calib((1, 3, 16, 16))
    q, record = quantize_graph(model, calib, OnnxQuantConfig(**FAST), log=lambda *_: None)
    inits = _inits(q)
    int8 = [v for v in inits.values() if v.dtype == np.int8]
    assert sum(v.ndim == 4 for v in int8) == 3 and sum(v.ndim == 2 for v in int8) == 1
    assert not any(v.dtype == np.float32 and v.ndim == 4 for v in inits.values())
    assert record["quantized"]["Conv"] == 3
    hist = op_histogram(q)
    assert hist.get("Erf", 0) == op_histogram(model)["Erf"]  # untouched, in float
    assert "LayerNormalization" in hist
    assert record["float_ops"]["Erf"] == 1
    assert record["sqnr_db"] > 25.0
    # The figure the record reports is the one a fresh evaluation gives.
    sess_fp, sess_q = onnx_hw.session(model), onnx_hw.session(q)
    x = _calib((4, 3, 16, 16), 1)[0]
    want, got = sess_fp.run(None, x)[0], sess_q.run(None, x)[0]
    sqnr = 10 * np.log10((want**2).sum() / ((want - got) ** 2).sum())
    assert sqnr > 25.0
    assert record["size_ratio"] <= 0.35
    assert q.ByteSize() <= 0.35 * model.ByteSize()


def test_matmul_between_activations_and_gemm(tmp_path):
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(32, 96)
            self.out = nn.Linear(32, 32)

        def forward(self, x):
            q, k, v = self.qkv(x).split(32, dim=-1)
            a = torch.softmax(q @ k.transpose(1, 2) / 32**0.5, dim=-1)
            return self.out(a @ v)

    model = _graph(tmp_path, Attn(), (1, 8, 32), opset=11)
    calib = _calib((1, 8, 32))
    q, record = quantize_graph(model, calib, OnnxQuantConfig(**FAST), log=lambda *_: None)
    assert record["quantized"]["MatMul"] >= 2  # the two Linear weights at least
    assert sum(1 for v in _inits(q).values() if v.dtype == np.int8 and v.ndim == 2) >= 2
    assert record["sqnr_db"] > 20.0


def test_head_levels_walk_back_from_the_outputs(tmp_path):
    model = _graph(tmp_path, ConvNet(), (1, 3, 16, 16))
    levels = head_levels(model, 2)
    ops = {n.name: n.op_type for n in model.graph.node}
    assert [ops[n] for n in levels[0]].count("MatMul") + \
        [ops[n] for n in levels[0]].count("Gemm") == 1  # the head, and nothing before it
    assert "Conv" in [ops[n] for n in levels[1]]


def test_hardware_and_accuracy_search_record_their_choices(tmp_path):
    model = _graph(tmp_path, ConvNet(), (1, 3, 32, 32))
    calib = _calib((1, 3, 32, 32), 4)
    cfg = OnnxQuantConfig(op_types=("Conv", "Gemm", "MatMul", "MaxPool", "Relu"))
    q, record = quantize_graph(model, calib, cfg, log=lambda *_: None)
    assert set(record["latency_ms_batch1"]) == {"fp32", "int8"}
    for entry in record["float_kept"]:
        assert entry["reason"].split(":")[0] in {"hardware", "accuracy", "user"}
    quantized = sum(record["quantized"].values())
    assert quantized + len(record["float_kept"]) == sum(
        1 for n in model.graph.node if n.op_type in cfg.op_types)


def test_exclude_keeps_the_node_float(tmp_path):
    model = _graph(tmp_path, ConvNet(), (1, 3, 16, 16))
    first_conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    cfg = OnnxQuantConfig(exclude=(first_conv,), **FAST)
    _, record = quantize_graph(model, _calib((1, 3, 16, 16), 2), cfg, log=lambda *_: None)
    assert record["quantized"]["Conv"] == 2
    assert record["float_kept"] == [{"node": first_conv, "op": "Conv",
                                     "reason": f"user: matches exclude pattern {first_conv!r}"}]


def test_refusals_are_one_line():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Erf", ["x"], ["y"], name="erf0")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ExportError, match=r"int8 \(onnx_ptq\).*'erf0' \(Erf\)"):
        quantize_graph(model, [{"x": np.ones((1, 4), np.float32)}], OnnxQuantConfig())
    with pytest.raises(ConfigError, match="'LSTM' has no int8 kernel"):
        OnnxQuantConfig(op_types=("Conv", "LSTM"))
    with pytest.raises(ConfigError, match="calibration: unknown value 'mse'"):
        OnnxQuantConfig(calibration="mse")


def test_ppocr_cls_shrinks_and_stays_close():
    from edgeopt.zoo.thirdparty import thirdparty_model

    try:
        path = thirdparty_model("ppocr-cls")
    except ModelLoadError as exc:
        pytest.skip(str(exc))
    model = load_graph(path)
    rng = np.random.default_rng(0)
    calib = [{"x": rng.uniform(-1, 1, (1, 3, 48, 192)).astype(np.float32)} for _ in range(4)]
    q, record = quantize_graph(model, calib, OnnxQuantConfig(**FAST), log=lambda *_: None)
    assert record["quantized"]["Conv"] >= 50
    # 0.55x, not 0.3x: on this 0.5 MB model the per-channel float scales, int32 biases
    # and the Q/DQ nodes' names weigh as much as the int8 weights themselves.
    assert record["size_ratio"] <= 0.6
    assert record["sqnr_db"] > 15.0
