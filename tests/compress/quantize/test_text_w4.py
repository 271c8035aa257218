"""compress.quantize.text_w4: every weight MatMul and the embedding table in 4 bits, the graph
still computing the embedding, at half the fp32 bytes on a tiny BERT (0.15x on MiniLM)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgeopt.compress.quantize.text_w4 import TextW4Config, quantize_text_w4
from edgeopt.core.errors import ConfigError


def test_config_refuses_what_ort_cannot_take():
    with pytest.raises(ConfigError, match="block_size must be a power of two >= 16"):
        TextW4Config(block_size=24)
    with pytest.raises(ConfigError, match="accuracy_level must be 0-4"):
        TextW4Config(accuracy_level=7)


def test_tiny_bert_goes_4bit_and_keeps_its_embedding(tiny_hf_onnx):
    _, graph, info = tiny_hf_onnx
    q, record = quantize_text_w4(graph, TextW4Config(embedding_block_size=16), log=lambda m: None)
    weights = sum(1 for n in graph.graph.node if n.op_type == "MatMul"
                  and n.input[1] in {i.name for i in graph.graph.initializer})
    assert record["matmuls_4bit"] == weights > 0 and record["embeddings_4bit"] >= 1
    # 0.49x here: a 32-wide BERT is mostly LayerNorms, biases and position tables (fp32)
    assert record["size_bytes"]["w4"] < 0.55 * record["size_bytes"]["fp32"]
    feed = {n: np.ones((2, 7), np.int64) for n in info["inputs"]}
    feed["input_ids"] = np.array([[2, 31, 32, 33, 34, 35, 3]] * 2)
    run = lambda m: ort.InferenceSession(m.SerializeToString(),  # noqa: E731
                                         providers=["CPUExecutionProvider"]).run(None, feed)[0]
    ref, got = run(graph), run(q)
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.8 and not np.allclose(ref, got, atol=1e-6)  # quantized, still close


def test_the_step_handler_returns_its_record_and_refuses_a_torch_model(tiny_hf_onnx, tiny_cnn):
    from edgeopt.core.registry import handler_for
    from edgeopt.core.step import StepContext

    _, graph, _ = tiny_hf_onnx
    cfg = TextW4Config(embedding_block_size=16)
    result = handler_for(cfg)(graph, cfg, StepContext())
    (line,) = result.record.summary()
    assert "MatMuls 4-bit (block 32)" in line and "x size" in line
    with pytest.raises(ConfigError, match="text_w4 applies to hf: text models"):
        handler_for(cfg)(tiny_cnn, cfg, StepContext())
