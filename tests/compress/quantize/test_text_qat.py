"""The text_qat step: its fake-quantized Linear computes what ORT's dynamic int8 MatMul
computes, and distillation brings the int8 simulation of the tiny BERT closer to float."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeopt.compress.distill.text_distill import pool  # noqa: E402
from edgeopt.compress.quantize.text_qat import (  # noqa: E402
    FakeQuantLinear,
    TextQATConfig,
    _swap,
    text_qat,
)
from edgeopt.core.step import StepContext  # noqa: E402


def test_fake_quant_linear_is_ort_dynamic_int8():
    """ORT's DynamicQuantizeLinear (its uint8 codes, scale and zero point), then the integer
    MatMul exactly (int32), against FakeQuantLinear's forward on the same input.

    Exactly, not ORT's MatMulInteger: on x86 CPUs without VNNI (this one: AVX2) ORT's u8s8
    kernel sums pairs of u8 x s8 products in int16 (VPMADDUBSW) and saturates, so its
    result depends on the weights (measured on MiniLM, every MatMul dynamic int8: cos 0.9914
    to fp32 with int8 weights, 0.9921 with uint8 weights, which take an exact kernel)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lin = torch.nn.Linear(24, 10, bias=False)
    x = (rng.standard_normal((2, 5, 24)) * 3 + 1).astype(np.float32)
    x[0, 0, 3] = 40.0  # one outlier sets the range, as LayerNorm outputs do
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 24])],
        [helper.make_tensor_value_info(n, t, None) for n, t in
         [("xq", TensorProto.UINT8), ("xs", TensorProto.FLOAT), ("xz", TensorProto.UINT8)]])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    xq, xs, xz = ort.InferenceSession(model.SerializeToString(),
                                      providers=["CPUExecutionProvider"]).run(None, {"x": x})
    w = lin.weight.detach().numpy().T  # in x out, as the exported MatMul reads it
    scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)  # as text_int8_ops writes it
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int32)
    y_int = ((xq.astype(np.int32) - int(xz)) @ q).astype(np.float32) * (xs * scale)
    with torch.no_grad():
        y_fake = FakeQuantLinear(lin)(torch.as_tensor(x)).numpy()
        y_float = lin(torch.as_tensor(x)).numpy()
    # the simulation is the int8 result up to float rounding; both differ from float
    assert np.abs(y_fake - y_int).max() < 1e-4 * np.abs(y_int).max()
    assert np.abs(y_float - y_int).max() > 10 * np.abs(y_fake - y_int).max()
    # the outlier channel kept float (text_int8_outliers' split): the step is set by the rest
    with torch.no_grad():
        y_split = FakeQuantLinear(lin, torch.tensor([3]))(torch.as_tensor(x)).numpy()
    assert np.abs(y_split - y_float).max() < 0.6 * np.abs(y_fake - y_float).max()  # 0.41x


def _int8_cos(model, teacher, batches, cfg):
    """Mean cos of the fake-quantized ``model`` to ``teacher`` on the batches."""
    import copy

    fake = copy.deepcopy(model)
    _swap(fake, to_fake=True)
    cos = []
    with torch.no_grad():
        for b in batches:
            feed = {k: torch.as_tensor(v) for k, v in b.items()}
            cos.append(torch.nn.functional.cosine_similarity(
                pool(fake(**feed), feed["attention_mask"], cfg).double(),
                pool(teacher(**feed), feed["attention_mask"], cfg).double(), dim=-1).mean())
    return float(sum(cos) / len(cos))


def test_text_qat_brings_the_int8_simulation_closer(tiny_hf_batches):
    import copy

    model, batches = tiny_hf_batches
    # A random tiny BERT loses almost nothing to int8 (1 - cos ~1e-7): its layers add little
    # to the residual stream, and no channel stands out. Trained ones have layers that count
    # and a few LayerNorm channels far larger than the rest, which set the per-tensor range.
    # Made so here (not in the last layer, whose large channels would dominate the cosine).
    model = copy.deepcopy(model)
    with torch.no_grad():
        for m in model.encoder.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight *= 5
        for ln in [model.embeddings.LayerNorm, model.encoder.layer[0].output.LayerNorm]:
            ln.weight[:2] *= 10
    # all channels int8 (a third of the tiny model's 32 would be float at the default 16)
    cfg = TextQATConfig(steps=60, lr=1e-3, warmup=0.1, outlier_channels=0, hidden_weight=0.0)
    # measured: 1 - cos 4.5e-5 -> 1.6e-5
    before = _int8_cos(model, model, batches, cfg)
    res = text_qat(model, cfg, StepContext(calibration=batches))
    after = _int8_cos(res.model, model, batches, cfg)
    # the int8 simulation's distance to float shrinks at least by a third
    assert 1 - after < 0.67 * (1 - before), (before, after)
    assert not any(isinstance(m, FakeQuantLinear) for m in res.model.modules())
    # the input model is untouched (it is the teacher and the report's fp32 stage)
    assert isinstance(model.encoder.layer[0].output.dense, torch.nn.Linear)
    assert not torch.equal(model.encoder.layer[0].output.dense.weight,
                           res.model.encoder.layer[0].output.dense.weight)
    details = res.record.details
    assert details["linears"] == 2 * 6 + 1  # q, k, v, attention out, intermediate, out; pooler
    assert details["steps"] == 60 and details["cos_last"] > details["cos_first"]
    assert details["outlier_channels"] == 0
