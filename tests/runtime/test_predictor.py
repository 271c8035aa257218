import json
import shutil

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.core.data import Preprocess
from edgeopt.core.errors import ArtifactError, DataError
from edgeopt.runtime import Predictor, load

INPUT_SHAPE = [1, 8, 8]
PRE = Preprocess(scale=1 / 255, mean=(0.5,), std=(0.25,))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, make_cnn):
    """(artifact folder, the torch model it was compiled from): compiled once per module."""
    model = make_cnn()
    out = tmp_path_factory.mktemp("runtime") / "art"
    edgeopt.compile(model, target="x86_64", input_shape=INPUT_SHAPE, out=out,
                    preprocess=PRE.to_dict())
    return out, model


@pytest.fixture
def art(compiled, tmp_path):
    """A private copy of the compiled artifact that a test may damage."""
    return shutil.copytree(compiled[0], tmp_path / "art")


def test_run_matches_torch(compiled):
    path, model = compiled
    pred = load(path)
    assert isinstance(pred, Predictor) and pred.backend == "onnxruntime"
    assert pred.input_shape == ["N", 1, 8, 8]
    x = np.random.default_rng(0).standard_normal((5, *INPUT_SHAPE)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = pred.run(x)
    assert got.shape == (5, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(pred(x), got)


def test_predict_applies_the_manifest_preprocessing(compiled):
    pred = load(compiled[0])
    raw = np.random.default_rng(1).integers(0, 256, (4, *INPUT_SHAPE), dtype=np.uint8)
    expected = pred.run((raw.astype(np.float32) / 255 - 0.5) / 0.25)
    np.testing.assert_allclose(pred.predict(raw), expected, atol=1e-5)
    np.testing.assert_allclose(pred.predict(raw), pred.run(PRE(raw)), atol=1e-6)
    # A single unbatched sample gets a batch dimension.
    np.testing.assert_allclose(pred.predict(raw[0]), expected[:1], atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 1, 10, 10), (2, 3, 8, 8), (1, 8, 8), (2, 64)])
def test_wrong_input_shape_is_a_data_error(compiled, shape):
    pred = load(compiled[0])
    with pytest.raises(DataError, match=r"does not fit the artifact's input \(N, 1, 8, 8\)"):
        pred.run(np.zeros(shape, np.float32))


def test_any_batch_size_runs(compiled):
    pred = load(compiled[0])
    assert [pred.run(np.zeros((b, *INPUT_SHAPE), np.float32)).shape[0] for b in (1, 3, 16)] == [
        1, 3, 16]


def test_flipped_byte_is_refused(art):
    model = art / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum") as exc:
        load(art)
    assert str(model) in str(exc.value)


def test_missing_file_is_refused(art):
    (art / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing model.onnx"):
        load(art)


def test_missing_manifest_is_refused(art):
    (art / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load(art)


def test_not_a_folder_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="not an artifact folder"):
        load(tmp_path / "nothing")


@pytest.mark.parametrize(("edit", "pattern"), [
    (lambda m: "{not json", "not valid JSON"),
    (lambda m: json.dumps({**m, "format_version": 99}), "format_version 99 is not supported"),
    (lambda m: json.dumps({**m, "backend": "nosuch"}), "needs backend 'nosuch'"),
])
def test_bad_manifest_is_refused(art, edit, pattern):
    mpath = art / "manifest.json"
    mpath.write_text(edit(json.loads(mpath.read_text())))
    with pytest.raises(ArtifactError, match=pattern):
        load(art)


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/hostname", "sub/../../x"])
def test_a_manifest_naming_a_path_outside_the_folder_is_refused(art, name):
    """Checksummed or not, a listed path must stay inside the artifact: a manifest naming
    ../outside.onnx would otherwise make load() read (and a model run) any file."""
    outside = art.parent / "outside.onnx"
    shutil.copy(art / "model.onnx", outside)
    mpath = art / "manifest.json"
    m = json.loads(mpath.read_text())
    sha = m["files"]["model.onnx"]["sha256"]
    for manifest in ({**m, "files": {**m["files"], name: {"sha256": sha}}},
                     {**m, "model_file": name}):
        mpath.write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match="outside its folder") as info:
            load(art)
        assert "\n" not in str(info.value)


def test_a_symbolic_link_inside_an_artifact_is_refused(art, tmp_path):
    """A link's checksum is its target's, which can change after the check; any link in
    the folder is refused, even one to a file that matches."""
    target = tmp_path / "real.onnx"
    shutil.move(art / "model.onnx", target)
    (art / "model.onnx").symlink_to(target)
    with pytest.raises(ArtifactError, match="symbolic link, model.onnx"):
        load(art)


def test_artifact_load_is_runtime_load(tmp_path, tiny_cnn):
    art = edgeopt.compile(tiny_cnn, input_shape=INPUT_SHAPE, out=tmp_path / "a")
    x = np.ones((2, *INPUT_SHAPE), np.float32)
    np.testing.assert_array_equal(art.load().run(x), load(art.path).run(x))
