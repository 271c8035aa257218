"""ONNX Runtime's export.py: one model.onnx for every target, and the manifest fields it owns."""

import edgeopt
from edgeopt.compile.backends.registry import get_backend

SHAPE = [1, 8, 8]


def test_one_onnx_file_serves_every_target(tmp_path, tiny_cnn):
    files = {}
    for target in ("x86_64", "aarch64", "rpi5"):
        art = edgeopt.compile(tiny_cnn, target=target, input_shape=SHAPE, out=tmp_path / target)
        assert art.manifest["target"] == target
        files[target] = (art.path / "model.onnx").read_bytes()
    assert len(set(files.values())) == 1
    assert set(files) <= set(get_backend("onnxruntime").targets())


def test_manifest_fields(tmp_path, tiny_cnn):
    m = edgeopt.compile(tiny_cnn, input_shape=SHAPE, out=tmp_path / "a").manifest
    assert (m["backend"], m["model_file"]) == ("onnxruntime", "model.onnx")
    assert m["opset"] >= 17
    assert m["inputs"] == [{"name": "input", "shape": ["N", *SHAPE], "dtype": "float32"}]
    assert [o["name"] for o in m["outputs"]] == ["logits"]
    assert m["outputs"][0]["shape"][0] == "N"
