"""compress.quantize.text_int8_gptq: GPTQ rounding of int8 MatMul weights on their own
scales, and its place in quantize_text (every int8 MatMul weight found and re-rounded)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

# The sessions quantize_text measures with, and a deployed artifact runs with.
from edgeopt.compress.quantize.onnx_hw import session as _session
from edgeopt.compress.quantize.text_int8 import TextInt8Config, quantize_text
from edgeopt.compress.quantize.text_int8_gptq import (
    float_name,
    gptq_rows,
    hessians,
    int8_weights,
)
from edgeopt.core.errors import ConfigError
from edgeopt.runtime.text import TextTokenizer

TEXTS = ["the cat sat on the mat", "a good day is a good fortune", "the dog sat",
         "fortune favours the cat!", "is the mat good?", "a dog, a cat, a mat."] * 4


def _layer(seed=0, n=64, m=32, k=2000, correlated=True):
    rng = np.random.default_rng(seed)
    if correlated:  # low-rank inputs with a few large channels, like a LayerNorm output
        x = rng.normal(size=(k, 8)) @ rng.normal(size=(8, n)) + 0.3 * rng.normal(size=(k, n))
        x *= np.where(np.arange(n) % 16 == 0, 6.0, 1.0)
    else:
        x = rng.normal(size=(k, n))
    w = rng.normal(size=(n, m)) * 0.05
    return x, w, np.abs(w).max(0) / 127


def _error(x, w, codes, scale):
    return float(np.linalg.norm(x @ w - x @ (codes * scale)))


def test_gptq_cuts_the_output_error_on_correlated_inputs():
    x, w, scale = _layer()
    rtn = np.clip(np.round(w / scale), -127, 127)
    codes = gptq_rows(w, scale, x.T @ x)
    assert codes.dtype == np.int8 and codes.min() >= -127 and codes.max() <= 127
    # Measured 0.20x: the rounding errors are moved where these inputs cannot see them.
    assert _error(x, w, codes, scale) < 0.4 * _error(x, w, rtn, scale)
    # Still a rounding on the same grid: no code more than a few steps from nearest.
    assert np.abs(codes - rtn).max() <= 4


def test_gptq_on_white_inputs_is_no_worse_than_nearest():
    x, w, scale = _layer(correlated=False)
    rtn = np.clip(np.round(w / scale), -127, 127)
    codes = gptq_rows(w, scale, x.T @ x)
    assert _error(x, w, codes, scale) <= 1.02 * _error(x, w, rtn, scale)


def test_a_channel_that_is_never_nonzero_is_harmless():
    x, w, scale = _layer()
    x[:, 5] = 0.0  # a masked outlier channel: H has a zero row and column
    codes = gptq_rows(w, scale, x.T @ x)
    assert codes[5].tolist() == [0] * w.shape[1]
    rtn = np.clip(np.round(w / scale), -127, 127)
    assert _error(x, w, codes, scale) < 0.5 * _error(x, w, rtn, scale)


def _feeds(folder, info):
    tok = TextTokenizer(folder.tokenizer, max_length=12, inputs=info["inputs"])
    return [tok(TEXTS[i:i + 8]) for i in range(0, len(TEXTS), 8)]


def _layer_error(w, codes, scale, h):
    d = w - codes.astype(np.float64) * scale.reshape(1, -1)
    return float(np.trace(d.T @ h @ d))


@pytest.mark.parametrize("activations", ["dynamic", "weight-only"])
def test_quantize_text_rounds_every_int8_matmul_weight_by_gptq(tiny_hf_onnx, activations):
    folder, graph, info = tiny_hf_onnx
    feeds = _feeds(folder, info)
    kw = dict(activations=activations)
    rtn, r_rec = quantize_text(graph, feeds, TextInt8Config(weight_rounding="nearest", **kw),
                               log=lambda *_: None)
    q, rec = quantize_text(graph, feeds, TextInt8Config(**kw), log=lambda *_: None)
    assert len(int8_weights(q)) == rec["gptq_weights"] == 12 and r_rec["gptq_weights"] == 0
    # Same graph, same scales, same size: only the integer codes differ.
    assert [n.op_type for n in q.graph.node] == [n.op_type for n in rtn.graph.node]
    codes = {i.name: i.raw_data for i in q.graph.initializer}
    moved = [w for w, _, _ in int8_weights(q)
             if codes[w] != next(i.raw_data for i in rtn.graph.initializer if i.name == w)]
    assert len(moved) == 12
    # What GPTQ minimises, layer by layer on the texts it was fitted to: the output error
    # ||X W - X W_int8||^2 = tr(D^T H D) of each int8 MatMul, D the weight's error.
    floats = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    h = hessians(q, sorted({x for _, _, x in int8_weights(q)}), feeds, _session)
    ratios = []
    for w, s, x in int8_weights(q):
        inits = {m: {i.name: numpy_helper.to_array(i) for i in g.graph.initializer}
                 for m, g in (("q", q), ("rtn", rtn))}
        err = {m: _layer_error(floats[float_name(w)], inits[m][w], inits[m][s], h[x])
               for m in inits}
        ratios.append(err["q"] / err["rtn"])
    # Measured 0.02 to 0.41 (mean 0.25) on the tiny BERT.
    assert max(ratios) <= 0.6 and float(np.mean(ratios)) < 0.5


def test_weight_rounding_is_checked():
    with pytest.raises(ConfigError, match="weight_rounding 'stochastic' unknown"):
        TextInt8Config(weight_rounding="stochastic")
