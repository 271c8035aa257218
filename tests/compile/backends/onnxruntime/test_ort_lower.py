import numpy as np
import onnx
import pytest
import torch

from edgeopt import Int8Config, QuantConfig, QuantSpec, apply
from edgeopt.compile.api import prepare
from edgeopt.compile.backends.onnxruntime.lower import export_onnx
from edgeopt.compile.backends.onnxruntime.runtime import make_session
from edgeopt.core.errors import ExportError
from edgeopt.core.ort_options import session_options

FLOAT_COMPUTE = {"Conv", "MatMul", "Gemm", "FusedConv", "FusedGemm", "NchwcConv"}


def _optimized_ops(model: onnx.ModelProto, tmp_path) -> list[str]:
    import onnxruntime as ort

    opts = session_options()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]


def _run(model: onnx.ModelProto, x: torch.Tensor) -> np.ndarray:
    return make_session(model.SerializeToString()).run(None, {"input": x.numpy()})[0]


def test_fp32_export_matches_torch(ptq_cnn, calib):
    gm, shape = prepare(ptq_cnn, [1, 8, 8])
    model = export_onnx(gm, shape)
    with torch.no_grad():
        ref = ptq_cnn(calib).numpy()
    assert np.abs(_run(model, calib) - ref).max() < 1e-5


def test_int8_export_runs_integer_kernels_and_matches_simulation(ptq_cnn, calib, tmp_path):
    q = apply(ptq_cnn, Int8Config(calib_size=64), data=calib)
    model = export_onnx(q, [1, 8, 8])
    ops = _optimized_ops(model, tmp_path)
    assert ops.count("QLinearConv") == 2, ops
    assert "QLinearAdd" in ops and "QGemm" in ops
    assert not FLOAT_COMPUTE & set(ops), f"float fallback in {ops}"
    with torch.no_grad():
        sim = q(calib).numpy()
    # ORT requantizes in fixed point; allow one output step of the logits' scale
    assert np.abs(_run(model, calib) - sim).max() < 0.02 * np.abs(sim).max()
    assert (np.argmax(_run(model, calib), 1) == np.argmax(sim, 1)).mean() > 0.97


def test_int8_weights_are_stored_as_int8_with_int32_bias(ptq_cnn, calib):
    q = apply(ptq_cnn, Int8Config(calib_size=32), data=calib)
    model = export_onnx(q, [1, 8, 8])
    types = {onnx.helper.tensor_dtype_to_np_dtype(i.data_type) for i in model.graph.initializer}
    assert np.dtype("int8") in types and np.dtype("int32") in types
    weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and
               len(i.dims) > 1]
    assert sum(int(np.prod(w.dims)) for w in weights) == sum(
        m.weight.numel() for m in ptq_cnn.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    )
    assert not any(n.name for n in model.graph.node), "node names only add bytes"
    assert not model.metadata_props
    assert (model.opset_import[0].version, model.ir_version) == (17, 8)


@pytest.mark.parametrize("bits", [4, 6])
def test_sub_8_bit_simulation_exports_exactly_in_int8_containers(ptq_cnn, calib, bits):
    cfg = QuantConfig(weights=QuantSpec(bits=bits, per_channel=True), calib_size=64)
    q = apply(ptq_cnn, cfg, data=calib)
    model = export_onnx(q, [1, 8, 8], weight_storage="int8")
    assert (model.opset_import[0].version, model.ir_version) == (17, 8)
    w = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer
         if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert len(w) == 2 and all(np.abs(a).max() <= 2 ** (bits - 1) - 1 for a in w)
    with torch.no_grad():
        sim = q(calib).numpy()
    assert np.abs(_run(model, calib) - sim).max() < 0.02 * np.abs(sim).max()


class _Gelu(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.act = torch.nn.GELU()

    def forward(self, x):
        return self.act(self.conv(x))


def test_unsupported_operator_is_named_with_its_layer():
    gm, shape = prepare(_Gelu().eval(), [1, 8, 8])
    with pytest.raises(ExportError, match=r"operator gelu.* at layer 'act'"):
        export_onnx(gm, shape)


@pytest.mark.parametrize("factory", ["resnet_small", "mobilenetv2_small"])
def test_reference_architectures_run_only_integer_kernels(factory, tmp_path):
    from edgeopt.zoo import mobilenet, resnet

    model = (resnet.resnet_small(width=8) if factory == "resnet_small"
             else mobilenet.mobilenetv2_small(width_mult=0.5)).eval()
    x = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    q = apply(model, Int8Config(calib_size=32, bias_correction=False), data=x, progress=False)
    ops = _optimized_ops(export_onnx(q, [1, 28, 28]), tmp_path)
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert ops.count("QLinearConv") == n_convs, ops
    assert not FLOAT_COMPUTE & set(ops), f"float fallback in {ops}"


def _store_half(gm: torch.fx.GraphModule) -> int:
    """Store every conv/linear weight as fp16, widened in forward (as a technique would)."""
    import torch.nn.functional as F

    n = 0
    for mod in gm.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            mod.weight = torch.nn.Parameter(mod.weight.detach().half(), requires_grad=False)
            if isinstance(mod, torch.nn.Conv2d):
                mod.forward = lambda x, m=mod: m._conv_forward(x, m.weight.float(), m.bias)
            else:
                mod.forward = lambda x, m=mod: F.linear(x, m.weight.float(), m.bias)
            n += 1
    return n


def test_an_fp16_stored_weight_is_an_fp16_initializer_and_a_cast(ptq_cnn, calib):
    """The exporter lowers what a layer stores, not its class: fp16 weights stay fp16 in
    the file (half their fp32 bytes) and a Cast widens them, so ORT computes in fp32."""
    gm, shape = prepare(ptq_cnn, [1, 8, 8])
    fp32 = export_onnx(gm, shape)
    layers = _store_half(gm)
    half = export_onnx(gm, shape)
    inits = {t.name: t for t in half.graph.initializer}
    casts = [n for n in half.graph.node if n.op_type == "Cast"]
    assert len(casts) == layers == 3
    assert all(inits[c.input[0]].data_type == onnx.TensorProto.FLOAT16 for c in casts)
    assert all(c.attribute[0].i == onnx.TensorProto.FLOAT for c in casts)
    weight_bytes = {onnx.TensorProto.FLOAT16: 0, onnx.TensorProto.FLOAT: 0}
    for t in half.graph.initializer:
        weight_bytes[t.data_type] = weight_bytes.get(t.data_type, 0) + len(t.raw_data)
    n_weights = sum(m.weight.numel() for m in gm.modules() if hasattr(m, "weight")
                    and m.weight is not None and m.weight.dtype == torch.float16)
    assert weight_bytes[onnx.TensorProto.FLOAT16] == 2 * n_weights
    # Two bytes saved per weight, less a Cast node (~30 bytes) per layer.
    assert 2 * n_weights - 40 * layers <= fp32.ByteSize() - half.ByteSize() <= 2 * n_weights
    with torch.no_grad():
        same_math, original = gm(calib).numpy(), ptq_cnn(calib).numpy()
    got = _run(half, calib)
    assert np.abs(got - same_math).max() < 1e-5
    assert np.abs(got - original).max() < 1e-2
