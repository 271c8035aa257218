import hashlib
import json

import numpy as np
import onnx
import pytest

import edgeopt
from edgeopt.compile.artifact import FORMAT_VERSION, ArtifactWriter
from edgeopt.core.data import Preprocess
from edgeopt.core.errors import OutputExistsError
from edgeopt.version import __version__

INPUT_SHAPE = [1, 8, 8]
PRE = Preprocess(scale=1 / 255, mean=(0.5,), std=(0.25,))


@pytest.fixture
def artifact(tmp_path, tiny_cnn):
    return edgeopt.compile(tiny_cnn, target="x86_64", input_shape=INPUT_SHAPE,
                           out=tmp_path / "art", preprocess=PRE.to_dict())


def test_manifest_describes_the_artifact(artifact):
    m = json.loads((artifact.path / "manifest.json").read_text())
    assert m == artifact.manifest
    assert m["format_version"] == FORMAT_VERSION and m["edgeopt_version"] == __version__
    assert (m["target"], m["backend"], m["precision"]) == ("x86_64", "onnxruntime", "fp32")
    assert m["layer_precision"] == {"features.0": "fp32", "head": "fp32"}
    assert m["inputs"] == [{"name": "input", "shape": ["N", 1, 8, 8], "dtype": "float32"}]
    assert m["outputs"] == [{"name": "logits", "shape": ["N", 10], "dtype": "float32"}]
    assert m["preprocessing"] == {"scale": 1 / 255, "mean": [0.5], "std": [0.25],
                                  "layout": "NCHW"}
    assert m["model_file"] == "model.onnx"


def test_manifest_checksums_every_file(artifact):
    files = artifact.manifest["files"]
    on_disk = {p.name for p in artifact.path.iterdir()} - {"manifest.json"}
    assert set(files) == on_disk == {"model.onnx"}
    for name, info in files.items():
        data = (artifact.path / name).read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_model_file_declares_a_dynamic_batch(artifact):
    model = onnx.load(artifact.path / "model.onnx")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 1, 8, 8]
    ops = [n.op_type for n in model.graph.node]
    # Batch norm was folded into the conv on compile.
    assert "BatchNormalization" not in ops
    assert ops.count("Conv") == 1 and ops.count("Gemm") == 1


def test_writer_failure_leaves_nothing_behind(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(RuntimeError), ArtifactWriter(out) as w:
        w.write_bytes("model.onnx", b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_replaces_only_on_commit(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match=str(out)):
        ArtifactWriter(out)
    with ArtifactWriter(out, force=True) as w:
        w.write_bytes("new.bin", b"\1\2")
        w.write_manifest({"target": "x86_64"})
        assert (out / "old.txt").exists()  # still the old folder until commit
        w.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "new.bin"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["new.bin"]["size"] == 2


def test_output_path_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "art"
    out.write_text("not a folder")
    with pytest.raises(OutputExistsError, match="not a folder"):
        ArtifactWriter(out, force=True)
    assert out.read_text() == "not a folder"


def test_runs_like_the_model(artifact, tiny_cnn):
    import torch

    x = np.random.default_rng(0).standard_normal((6, *INPUT_SHAPE)).astype(np.float32)
    with torch.no_grad():
        want = tiny_cnn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(artifact.load().run(x), want, atol=1e-4)
