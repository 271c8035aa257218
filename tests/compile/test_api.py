import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.core.errors import ConfigError, ExportError, OutputExistsError

INPUT_SHAPE = [1, 8, 8]


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_existing_folder_without_force_is_untouched(tmp_path, tiny_cnn):
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--force") as exc:
        edgeopt.compile(tiny_cnn, input_shape=INPUT_SHAPE, out=out)
    assert str(out) in str(exc.value)
    assert _snapshot(out) == {out.joinpath("keep.txt").relative_to(out): b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_force_replaces_an_existing_artifact(tmp_path, tiny_cnn, make_cnn):
    out = tmp_path / "art"
    edgeopt.compile(make_cnn(seed=1), input_shape=INPUT_SHAPE, out=out)
    (out / "stale.txt").write_text("old")
    art = edgeopt.compile(tiny_cnn, input_shape=INPUT_SHAPE, out=out, force=True)
    assert art.path == out.resolve()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no staging or backup left
    x = torch.randn(4, *INPUT_SHAPE)
    np.testing.assert_allclose(art.load().run(x.numpy()), tiny_cnn(x).detach().numpy(), atol=1e-4)


def test_unexportable_operator_leaves_nothing(tmp_path, unexportable_cnn):
    model, op, layer = unexportable_cnn
    with pytest.raises(ExportError) as exc:
        edgeopt.compile(model, input_shape=INPUT_SHAPE, out=tmp_path / "art")
    msg = str(exc.value)
    assert op in msg and f"'{layer}'" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_compile_does_not_modify_the_users_model(tmp_path, tiny_cnn):
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    edgeopt.compile(tiny_cnn, input_shape=INPUT_SHAPE, out=tmp_path / "art")
    after = tiny_cnn.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        torch.testing.assert_close(after[k], v)


def test_default_output_is_a_fresh_temporary_folder(tiny_cnn):
    a = edgeopt.compile(tiny_cnn, input_shape=INPUT_SHAPE)
    b = edgeopt.compile(tiny_cnn, input_shape=INPUT_SHAPE)
    assert a.path != b.path
    assert (a.path / "model.onnx").read_bytes() == (b.path / "model.onnx").read_bytes()


def test_target_alias_is_recorded_by_its_name(tmp_path, tiny_cnn):
    art = edgeopt.compile(tiny_cnn, target="amd64", input_shape=INPUT_SHAPE, out=tmp_path / "a")
    assert art.manifest["target"] == "x86_64"


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"target": "riscv"}, r"unknown target 'riscv' \(known: x86_64"),
    ({"precision": "int8"}, "model is fp32 but precision 'int8'"),
    ({"target": "cuda", "backend": "onnxruntime"}, "no backend 'onnxruntime'"),
    ({"input_shape": None}, "needs input_shape"),
])
def test_bad_options_are_config_errors(tmp_path, tiny_cnn, kwargs, pattern):
    kwargs = {"input_shape": INPUT_SHAPE, **kwargs}
    with pytest.raises(ConfigError, match=pattern):
        edgeopt.compile(tiny_cnn, out=tmp_path / "art", **kwargs)
    assert list(tmp_path.iterdir()) == []
