"""quantize_graph: int8 weights where ORT runs integer kernels, the rest untouched in float."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgeopt.compress.quantize import onnx_hw
from edgeopt.compress.quantize.onnx_config import WEIGHT_OPS
from edgeopt.compress.quantize.onnx_ptq import (
    OnnxQuantConfig,
    explicit_captures,
    head_levels,
    quantize_graph,
    sensitivity_search,
    weight_only_int8,
)
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
    why = f"user: matches exclude pattern {first_conv!r}"
    assert record["float_kept"] == [{"node": first_conv, "op": "Conv", "reason": why,
                                     "weights": "weight-only int8"}]
    # Its compute stays float; its weights are stored int8 behind Cast * scale.
    (entry,) = record["weight_only_int8"]
    assert entry["node"] == first_conv and entry["reason"] == why
    assert entry["per"] == "channel (axis 0)" and entry["bytes_saved"] > 0


def test_weight_only_int8_conv_and_lstm_keep_float_compute(tmp_path):
    class Rec(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(16, 32, 3, padding=1)
            self.lstm = nn.LSTM(32, 64, batch_first=True)

        def forward(self, x):
            y, _ = self.lstm(self.conv(x).transpose(1, 2))
            return y

    model = _graph(tmp_path, Rec(), (1, 16, 10))
    q = onnx.ModelProto.FromString(model.SerializeToString())
    entries = weight_only_int8(q)
    ops = {e["op"]: e for e in entries}
    assert set(ops) == {"Conv", "LSTM"}
    assert len(ops["LSTM"]["weights"]) == 2 and ops["LSTM"]["per"] == "channel (axis 1)"
    int8 = [v for v in _inits(q).values() if v.dtype == np.int8]
    assert sorted(v.shape for v in int8) == [(1, 256, 32), (1, 256, 64), (32, 16, 3)]
    assert not any(v.dtype == np.float32 and v.ndim == 3 for v in _inits(q).values())
    assert q.ByteSize() < 0.35 * model.ByteSize()
    assert op_histogram(q)["Conv"] == 1 and op_histogram(q)["LSTM"] == 1  # float ops
    x = _calib((3, 16, 10), 1)[0]
    want = onnx_hw.session(model).run(None, x)[0]
    got = onnx_hw.session(q).run(None, x)[0]
    assert 10 * np.log10((want**2).sum() / ((want - got) ** 2).sum()) > 35.0
    # Through quantize_graph: ORT's QDQ leaves the LSTM float; its W and R go int8.
    _, record = quantize_graph(model, _calib((1, 16, 10), 4), OnnxQuantConfig(**FAST),
                               log=lambda *_: None)
    lstm = [e for e in record["weight_only_int8"] if e["op"] == "LSTM"]
    assert lstm and "no int8 kernel" in lstm[0]["reason"]


def _if_reads_relu_model():
    """x -> Conv -> Relu -> If(batch == 1: Squeeze else Identity), the If's branches
    reading the Relu output from the enclosing graph (silero-vad's pattern)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    out = helper.make_tensor_value_info("b", TensorProto.FLOAT, None)
    then = helper.make_graph([helper.make_node("Squeeze", ["r", "axes"], ["b"])], "t", [], [out])
    other = helper.make_graph([helper.make_node("Identity", ["r"], ["b"])], "e", [], [out])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Shape", ["r"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["n"], name="gather"),
             helper.make_node("Equal", ["n", "one"], ["cond1"], name="eq"),
             helper.make_node("Squeeze", ["cond1", "axes"], ["cond"], name="sq"),
             helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then,
                              else_branch=other)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[w, axes, one, zero])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_branch_reading_a_relu_output_keeps_the_relu():
    model = _if_reads_relu_model()
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    assert explicit_captures(probe) == 1
    assert [n.op_type for n in probe.graph.node][-2:] == ["Identity", "If"]
    calib = [{"x": np.random.default_rng(i).standard_normal((3, 2, 8)).astype(np.float32)}
             for i in range(4)]
    cfg = OnnxQuantConfig(op_types=("Conv", "Relu"), **FAST)
    q, _ = quantize_graph(model, calib, cfg, log=lambda *_: None)
    got = onnx_hw.session(q).run(None, calib[0])[0]
    want = onnx_hw.session(model).run(None, calib[0])[0]
    assert got.min() >= 0.0  # ORT's QDQ folds the Relu into the Conv: the If still sees it
    assert 10 * np.log10((want**2).sum() / ((want - got) ** 2).sum()) > 25.0


def test_sensitivity_search_keeps_the_worst_nodes_float():
    class FakeBuilder:
        candidates = {"a": "Conv", "b": "Add", "c": "Conv", "d": "Relu"}

        def build(self, nodes):
            return frozenset(nodes)

    # Each node's noise (as a fraction of the signal); "d" costs nothing alone.
    noise = {"a": 1e-4, "b": 3e-1, "c": 2e-3, "d": 0.0}

    def score(nodes):
        total = sum(noise[n] for n in nodes)
        return 120.0 if total == 0 else float(min(120.0, -10 * np.log10(total)))

    nodes, current, db, found = sensitivity_search(
        FakeBuilder(), set(noise), frozenset(noise), score(set(noise)), score, 30.0, 10.0,
        log=lambda *_: None)
    assert [n for n, _, _ in found] == ["b", "c"]  # worst first, until 30 dB is reached
    assert nodes == {"a", "d"} and current == frozenset({"a", "d"}) and db >= 30.0


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


def _int8_looks_slower(monkeypatch):
    """Times on any CPU: 1 ms for a float graph, 2 ms plus 10 us per QuantizeLinear for
    an int8 one. int8 is twice as slow as fp32, and quantizing fewer ops is faster, but
    never by the 10% that the per-type pruning asks for."""
    q_nodes: dict[int, int] = {}
    real_session = onnx_hw.session

    def session(model, threads=1):
        sess = real_session(model, threads)
        proto = model if isinstance(model, onnx.ModelProto) else onnx.ModelProto.FromString(model)
        q_nodes[id(sess)] = sum(n.op_type == "QuantizeLinear" for n in proto.graph.node)
        return sess

    monkeypatch.setattr(onnx_hw, "session", session)
    monkeypatch.setattr(onnx_hw, "latencies", lambda sessions, feed, **_: [
        2e-3 + 1e-5 * q_nodes[id(s)] if q_nodes[id(s)] else 1e-3 for s in sessions])


def test_without_hardware_awareness_timing_decides_nothing(tmp_path, monkeypatch):
    # Stop 25's CI: on its CPU the int8 graph timed slower than fp32, and the whole-graph
    # "weight ops only" fallback ran although hardware_aware was False.
    _int8_looks_slower(monkeypatch)
    model = _graph(tmp_path, ConvNet(), (1, 3, 16, 16))
    cfg = OnnxQuantConfig(**FAST)
    _, record = quantize_graph(model, _calib((1, 3, 16, 16), 2), cfg, log=lambda *_: None)
    assert record["float_kept"] == []
    assert {"Relu", "MaxPool"} <= set(record["quantized"])


def test_hardware_awareness_falls_back_to_weight_ops_when_int8_is_slower(tmp_path, monkeypatch):
    _int8_looks_slower(monkeypatch)
    model = _graph(tmp_path, ConvNet(), (1, 3, 16, 16))
    cfg = OnnxQuantConfig(hardware_aware=True, accuracy_aware=False)
    _, record = quantize_graph(model, _calib((1, 3, 16, 16), 2), cfg, log=lambda *_: None)
    assert set(record["quantized"]) <= set(WEIGHT_OPS)
    assert record["quantized"].get("Conv") == 3
    reasons = {e["op"]: e["reason"] for e in record["float_kept"]}
    assert {"Relu", "MaxPool"} <= set(reasons)
    assert all(r.startswith("hardware:") for r in reasons.values())
