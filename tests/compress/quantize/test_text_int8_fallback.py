"""compress.quantize.text_int8_fallback: the fewest most costly MatMuls back to float for
a fidelity target, found by doubling then bisection; and the option in quantize_text."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

# The sessions quantize_text measures with, and a deployed artifact runs with.
from edgeopt.compress.quantize.onnx_hw import session as _session
from edgeopt.compress.quantize.text_int8 import (
    TextInt8Config,
    cosines,
    quantize_text,
)
from edgeopt.compress.quantize.text_int8_fallback import fall_back
from edgeopt.core.errors import ConfigError


def _curve(count):
    return 0.99 + 0.0003 * count  # monotone: each node back to float helps


@pytest.mark.parametrize("target, want", [(0.98, 0), (0.9903, 1), (0.9930, 10),
                                          (0.99359, 12), (0.9999, 20)])
def test_fall_back_finds_the_fewest_nodes_that_meet_the_target(target, want):
    ranked = [f"n{i}" for i in range(20)]
    calls = collections.Counter()

    def score(k):
        calls[k] += 1
        return _curve(k)

    count, seen = fall_back(ranked, score, target, log=lambda *_: None)
    assert count == want
    assert all(v == 1 for v in calls.values())  # no count rebuilt twice
    assert len(seen) <= 2 * 5 + 2  # doubling plus bisection over 20, not 20 rebuilds
    if 0 < want < len(ranked):
        assert seen[want] >= target > seen[want - 1] if want - 1 in seen else seen[want] >= target


def _graph_and_feeds(seed=0):
    """Four Linears on an input with one channel 30x larger than the rest (a LayerNorm
    output of MiniLM has them): x@W1 -> Relu -> @W3, plus x@W2 -> @W4. The tiny random
    BERT's int8 activations lose nothing measurable in float32, this one's do."""
    rng = np.random.default_rng(seed)
    w = {f"W{i}": (rng.normal(size=(32, 32)) / 6).astype(np.float32) for i in range(1, 5)}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"], name="/l/a/MatMul"),
             helper.make_node("Relu", ["a"], ["r"], name="/l/relu"),
             helper.make_node("MatMul", ["r", "W3"], ["c"], name="/l/c/MatMul"),
             helper.make_node("MatMul", ["x", "W2"], ["b"], name="/l/b/MatMul"),
             helper.make_node("MatMul", ["b", "W4"], ["d"], name="/l/d/MatMul"),
             helper.make_node("Add", ["c", "d"], ["y"], name="/l/add")]
    g = helper.make_graph(
        nodes, "outliers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8, 32])],
        [numpy_helper.from_array(v, k) for k, v in w.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = []
    for _ in range(4):
        x = rng.normal(size=(8, 8, 32)).astype(np.float32)
        x[..., 3] *= 30
        feeds.append({"x": x})
    return model, feeds


def test_quantize_text_meets_a_target_by_falling_back_the_fewest():
    graph, feeds = _graph_and_feeds()
    quiet = dict(log=lambda *_: None)
    refs = [_session(graph).run(None, f)[0] for f in feeds]
    cos = lambda m: float(cosines(_session(m), feeds, refs).mean())  # noqa: E731
    base, _ = quantize_text(graph, feeds, TextInt8Config(activations="dynamic"), **quiet)
    floor, _ = quantize_text(graph, feeds, TextInt8Config(activations="weight-only"), **quiet)
    target = cos(base) + 0.5 * (cos(floor) - cos(base))  # half way to float activations
    q, rec = quantize_text(graph, feeds, TextInt8Config(activations="dynamic",
                                                        target_cos=target), **quiet)
    assert cos(q) >= target > cos(base)
    assert 0 < len(rec["fallback_float"]) < 4  # some, not every MatMul, back to float
    ops = collections.Counter(n.op_type for n in q.graph.node)
    assert ops["MatMulInteger"] == 4 - len(rec["fallback_float"])
    # The ones that went back are the record's own count; a target already met moves none.
    easy, e_rec = quantize_text(graph, feeds, TextInt8Config(activations="dynamic",
                                                             target_cos=0.5), **quiet)
    assert e_rec["fallback_float"] == [] and list(e_rec["fallback_tried"]) == ["0"]
    assert [n.op_type for n in easy.graph.node] == [n.op_type for n in base.graph.node]


def test_target_cos_is_checked():
    with pytest.raises(ConfigError, match="target_cos must be in"):
        TextInt8Config(target_cos=1.5)


def test_split_target_splits_the_fewest_that_meet_it_and_runs_the_rest_plain():
    """``split_target``: of the MatMuls the probes would split or keep float, only the
    fewest whose split gains most are split, the rest plain dynamic int8 (none float)."""
    graph, feeds = _graph_and_feeds()
    quiet = dict(log=lambda *_: None)
    refs = [_session(graph).run(None, f)[0] for f in feeds]
    cos = lambda m: float(cosines(_session(m), feeds, refs).mean())  # noqa: E731
    strict = dict(group_tolerance=1e-5, outlier_channels=1)  # every MatMul a candidate
    plain, _ = quantize_text(graph, feeds, TextInt8Config(activations="dynamic",
                                                          outlier_channels=1), **quiet)
    full, f_rec = quantize_text(graph, feeds, TextInt8Config(**strict), **quiet)
    assert len(f_rec["dynamic_int8_outliers_split"]) == 3  # and one weight-only
    target = cos(plain) + 0.5 * (cos(full) - cos(plain))
    q, rec = quantize_text(graph, feeds, TextInt8Config(**strict, split_target=target), **quiet)
    split = rec["dynamic_int8_outliers_split"]
    assert cos(q) >= target > cos(plain)
    assert 0 < len(split) < 4 and rec["weight_only_int8"] == []
    assert "/l/b/MatMul" in split  # its split gains most (5.6e-4 of 1 - cos)
    ops = collections.Counter(n.op_type for n in q.graph.node)
    assert ops["MatMulInteger"] == 4  # every MatMul int8, split or not
    assert sum(n.name.endswith("_outliers") for n in q.graph.node) == len(split)
    assert rec["split_tried"][str(len(split))] >= target
    # A target the plain int8 graph already meets splits none: the plain graph itself.
    easy, e_rec = quantize_text(graph, feeds, TextInt8Config(**strict, split_target=0.5),
                                **quiet)
    assert e_rec["dynamic_int8_outliers_split"] == [] and list(e_rec["split_tried"]) == ["0"]
    assert [n.op_type for n in easy.graph.node] == [n.op_type for n in plain.graph.node]


@pytest.mark.parametrize("kwargs, match", [
    (dict(split_target=1.5), "split_target must be in"),
    (dict(split_target=0.99, activations="dynamic"), "split_target needs"),
    (dict(split_target=0.99, outlier_channels=0), "split_target needs")])
def test_split_target_is_checked(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TextInt8Config(**kwargs)
