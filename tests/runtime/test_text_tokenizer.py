"""runtime.text and Predictor.predict on text artifacts: tokenizers only, pad and truncate
to the maximum length, truncation said once."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest

from edgeopt import runtime
from edgeopt.compile.text import write_text_artifact
from edgeopt.core.errors import ArtifactError, DataError
from edgeopt.runtime.text import TextTokenizer

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def test_pads_to_the_maximum_length_with_special_tokens(tiny_hf):
    tok = TextTokenizer(tiny_hf / "tokenizer.json", max_length=8, inputs=INPUTS)
    feed = tok(["the cat sat", "a dog"])
    assert {k: v.shape for k, v in feed.items()} == {k: (2, 8) for k in INPUTS}
    assert feed["input_ids"][0, 0] == 2 and feed["input_ids"][0, 4] == 3  # [CLS] ... [SEP]
    assert feed["attention_mask"].sum(1).tolist() == [5, 4]
    longest = TextTokenizer(tiny_hf / "tokenizer.json", max_length=8, inputs=INPUTS[:2],
                            padding="longest")
    assert longest(["the cat sat", "a dog"])["input_ids"].shape == (2, 5)


def test_truncation_is_said_once(tiny_hf):
    tok = TextTokenizer(tiny_hf / "tokenizer.json", max_length=6, inputs=INPUTS)
    long_text = "the cat sat on the mat " * 4
    with pytest.warns(UserWarning, match=r"^1 of 2 texts are longer than the maximum length "
                                         r"\(6 tokens\): truncated \(said once\)$"):
        feed = tok([long_text, "a dog"])
    assert feed["input_ids"][0].tolist()[-1] == 3  # cut before [SEP], which is kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok([long_text])


def test_bad_texts_and_tokenizer_file(tiny_hf, tmp_path):
    tok = TextTokenizer(tiny_hf / "tokenizer.json", max_length=6, inputs=INPUTS)
    with pytest.raises(DataError, match="takes a list of strings"):
        tok([1, 2])
    with pytest.raises(ArtifactError, match="no tokenizer file tokenizer.json"):
        TextTokenizer(tmp_path / "tokenizer.json", max_length=6, inputs=INPUTS)


@pytest.fixture(scope="module")
def artifact(tiny_hf_onnx, tmp_path_factory):
    folder, graph, info = tiny_hf_onnx
    out = tmp_path_factory.mktemp("text-art") / "art"
    return write_text_artifact(out, graph, folder, info, max_length=16), graph


def test_predict_tokenizes_runs_and_returns_embeddings(artifact, tiny_hf):
    path, graph = artifact
    pred = runtime.load(path, threads=1)
    texts = ["the cat sat on the mat", "a good day", "fortune"]
    got = pred.predict(texts)
    feed = TextTokenizer(tiny_hf / "tokenizer.json", max_length=16, inputs=INPUTS)(texts)
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, sess.run(None, feed)[0], atol=1e-6)
    assert got.shape == (3, 32)


def test_the_manifest_lists_the_tokenizer_and_a_changed_one_is_refused(artifact, tmp_path):
    import shutil

    path, _ = artifact
    manifest = runtime.read_manifest(path)
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json"}
    assert len(manifest["files"]["tokenizer.json"]["sha256"]) == 64
    assert manifest["text"]["max_length"] == 16 and manifest["text"]["pooling"] == "mean"
    assert [i["shape"] for i in manifest["inputs"]] == [["batch", "sequence"]] * 3
    copy = shutil.copytree(path, tmp_path / "copy")
    (copy / "tokenizer.json").write_text("{}")
    with pytest.raises(ArtifactError, match="does not match its manifest checksum"):
        runtime.load(copy)
