"""core.hf.export: the ONNX graph computes what transformers + the pooling compute, at any
batch and sequence length, with the mask constants clamped."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgeopt.core.hf import read_folder
from edgeopt.core.hf.export import MASK_FLOOR, export_hf, load_torch


def _torch_embedding(model, ids, mask, types):
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    m = mask.unsqueeze(-1).float()
    e = (h * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(e, dim=-1).numpy()


@pytest.mark.parametrize("shape", [(1, 5), (3, 11)])
def test_onnx_matches_torch_at_any_batch_and_sequence(tiny_hf_onnx, shape):
    folder, graph, info = tiny_hf_onnx
    assert info["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 40, size=shape)
    mask = np.ones(shape, np.int64)
    mask[-1, shape[1] // 2:] = 0  # a padded row
    types = np.zeros(shape, np.int64)
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
    want = _torch_embedding(load_torch(folder, "embedding"), *(torch.from_numpy(a) for a in
                                                                (ids, mask, types)))
    assert got.shape == (shape[0], 32)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_mask_constants_are_clamped(tiny_hf_onnx):
    from onnx import numpy_helper

    _, graph, info = tiny_hf_onnx
    assert info["mask_constants_clamped"] >= 1
    lows = [numpy_helper.to_array(a.t).min() for n in graph.graph.node if n.op_type == "Constant"
            for a in n.attribute if a.name == "value" and a.t.data_type == 1
            and numpy_helper.to_array(a.t).size]
    assert min(lows) >= MASK_FLOOR


def test_classification_exports_logits(tiny_hf_classifier):
    folder = read_folder(f"hf:{tiny_hf_classifier}", task="classification")
    graph, info = export_hf(folder, task="classification")
    assert info["output"] == "logits" and len(info["labels"]) == 3
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {n: np.ones((2, 7), np.int64) for n in info["inputs"]}
    assert sess.run(None, feed)[0].shape == (2, 3)
