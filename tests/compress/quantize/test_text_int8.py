"""compress.quantize.text_int8 on a tiny random BERT: integer kernels where the probes say
so, float LayerNorm/Softmax/GELU, per-row int8 embeddings, fidelity kept."""

from __future__ import annotations

import collections

import numpy as np
import onnxruntime as ort
import pytest

from edgeopt.compress.quantize.text_int8 import TextInt8Config, group_of, quantize_text
from edgeopt.compress.quantize.text_int8_ops import weight_matmuls
from edgeopt.compress.quantize.text_int8_outliers import split_outliers
from edgeopt.core.errors import ConfigError
from edgeopt.core.ort_options import session_options
from edgeopt.runtime.text import TextTokenizer

TEXTS = ["the cat sat on the mat", "a good day is a good fortune", "the dog sat",
         "fortune favours the cat!", "is the mat good?", "a dog, a cat, a mat."] * 4


def _feeds(folder, info):
    tok = TextTokenizer(folder.tokenizer, max_length=12, inputs=info["inputs"])
    return [tok(TEXTS[i:i + 8]) for i in range(0, len(TEXTS), 8)]


def _run(model, feeds):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, f)[0] for f in feeds])


@pytest.fixture(scope="module")
def dynamic(tiny_hf_onnx):
    folder, graph, info = tiny_hf_onnx
    return quantize_text(graph, _feeds(folder, info), TextInt8Config(activations="dynamic"),
                         log=lambda *_: None)


def test_int8_keeps_the_embeddings_and_the_float_ops(tiny_hf_onnx, dynamic):
    folder, graph, info = tiny_hf_onnx
    feeds = _feeds(folder, info)
    q, record = dynamic
    ops = collections.Counter(n.op_type for n in q.graph.node)
    before = collections.Counter(n.op_type for n in graph.graph.node)
    assert ops["MatMulInteger"] == len(weight_matmuls(graph)) == 12
    for op in ("LayerNormalization", "Softmax", "Erf"):
        assert ops[op] == before[op]
    a, b = _run(graph, feeds), _run(q, feeds)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99
    assert record["embeddings_int8"]  # the 57x32 word table: a scale per row


def test_auto_probes_every_group_and_keeps_the_costly_ones_weight_only(tiny_hf_onnx):
    folder, graph, info = tiny_hf_onnx
    feeds = _feeds(folder, info)
    q, record = quantize_text(graph, feeds, TextInt8Config(group_tolerance=0.0,
                                                           outlier_channels=0),
                              log=lambda *_: None)
    assert len(record["group_cost"]) == 6  # query, key, value, attn out, intermediate, out
    costly = {g for g, c in record["group_cost"].items() if c > 0}
    assert set(record["weight_only_int8"]) == costly
    assert set(record["dynamic_int8"]) == set(record["group_cost"]) - costly
    ops = collections.Counter(n.op_type for n in q.graph.node)
    assert ops["MatMulInteger"] == 12 - 2 * len(costly)  # two layers per group


def test_weight_only_computes_in_float_on_int8_weights(tiny_hf_onnx):
    folder, graph, info = tiny_hf_onnx
    feeds = _feeds(folder, info)
    q, _ = quantize_text(graph, feeds, TextInt8Config(activations="weight-only"),
                         log=lambda *_: None)
    ops = collections.Counter(n.op_type for n in q.graph.node)
    assert ops["MatMulInteger"] == 0 and ops["Cast"] >= 12
    np.testing.assert_allclose(_run(q, feeds), _run(graph, feeds), atol=0.05)


def test_outlier_split_is_exact_in_float(tiny_hf_onnx):
    folder, graph, info = tiny_hf_onnx
    feeds = _feeds(folder, info)
    names = set(weight_matmuls(graph))
    amax = {n.input[0]: np.arange(32 if "output/dense" not in n.name or "attention" in n.name
                                  else 64, dtype=np.float32)
            for n in graph.graph.node if n.name in names}
    split = split_outliers(graph, names, amax, 4)
    np.testing.assert_allclose(_run(split, feeds), _run(graph, feeds), atol=1e-5)


def test_groups_and_config_checks():
    assert group_of("/model/encoder/layer.3/attention/self/value/MatMul") == \
        "/model/encoder/layer.*/attention/self/value/MatMul"
    with pytest.raises(ConfigError, match="activations 'static' unknown"):
        TextInt8Config(activations="static")


def test_onnxruntime_runs_the_int8_matmuls_as_integer_kernels(dynamic, tmp_path):
    import onnx

    q, _ = dynamic
    opts = session_options()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(q.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node)
    integer = sum(ops[k] for k in ("MatMulIntegerToFloat", "DynamicQuantizeMatMul",
                                   "MatMulInteger"))
    assert integer == 12 and ops["MatMul"] <= 4  # only Q.K^T and P.V stay float MatMuls
