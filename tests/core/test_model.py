import os

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt.core.errors import EdgeoptError, ModelLoadError
from edgeopt.core.model import load_model
from edgeopt.zoo.resnet import resnet_small

INPUT_SHAPE = [1, 8, 8]


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-4) -> None:
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), atol=atol, rtol=0)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, *INPUT_SHAPE, generator=torch.Generator().manual_seed(1))


def test_pt2_loads_with_its_input_shape(tmp_path, tiny_cnn, x):
    ep = torch.export.export(tiny_cnn, (x[:2],), dynamic_shapes=({0: torch.export.Dim("b")},))
    path = tmp_path / "tiny.pt2"
    torch.export.save(ep, path)

    handle = load_model(str(path))
    assert handle.kind == "pt2"
    assert handle.input_shape == INPUT_SHAPE
    assert handle.name == "tiny"
    _close(handle.module(x), tiny_cnn(x))


def test_pt2_exported_at_a_static_batch_still_declares_chw(tmp_path, tiny_cnn, x):
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(tiny_cnn, (x[:1],)), path)
    handle = load_model(str(path))
    assert handle.input_shape == INPUT_SHAPE
    _close(handle.module(x[:1]), tiny_cnn(x[:1]))


def test_pt2_model_can_be_compiled(tmp_path, tiny_cnn, x):
    path = tmp_path / "tiny.pt2"
    ep = torch.export.export(tiny_cnn, (x[:2],), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(ep, path)
    handle = load_model(str(path))
    art = edgeopt.compile(handle.module, target="x86_64", input_shape=handle.input_shape,
                          out=tmp_path / "art")
    np.testing.assert_allclose(art.load().run(x.numpy()), tiny_cnn(x).detach().numpy(), atol=1e-4)


@pytest.mark.parametrize("suffix", [".pt", ".ts"])
def test_torchscript_loads(tmp_path, tiny_cnn, x, suffix):
    path = tmp_path / f"tiny{suffix}"
    torch.jit.save(torch.jit.trace(tiny_cnn, x[:1]), str(path))
    handle = load_model(str(path))
    assert handle.kind == "torchscript"
    assert isinstance(handle.module, torch.jit.ScriptModule)
    _close(handle.module(x), tiny_cnn(x))


def test_onnx_from_edgeopts_exporter_loads(tmp_path, tiny_cnn, x):
    edgeopt.compile(tiny_cnn, target="x86_64", input_shape=INPUT_SHAPE, out=tmp_path / "art")
    handle = load_model(str(tmp_path / "art" / "model.onnx"))
    assert handle.kind == "onnx"
    assert handle.input_shape == INPUT_SHAPE
    _close(handle.module(x), tiny_cnn(x))


def test_factory_with_weights_restores_every_tensor(tmp_path, x):
    torch.manual_seed(3)
    trained = resnet_small().eval()
    with torch.no_grad():  # make the saved state differ from a fresh factory() call
        for p in trained.parameters():
            p.add_(0.01 * torch.randn_like(p))
        for m in trained.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    weights = tmp_path / "w.pt"
    torch.save(trained.state_dict(), weights)

    handle = load_model("edgeopt.zoo.resnet:resnet_small", weights=str(weights))
    assert handle.kind == "factory"
    assert handle.name == "resnet_small"
    assert handle.input_shape is None
    assert not handle.module.training
    _close(handle.module(x), trained(x))
    fresh = load_model("edgeopt.zoo.resnet:resnet_small").module
    assert not torch.allclose(fresh(x), trained(x), atol=1e-3)


def test_nn_module_passes_through(tiny_cnn):
    handle = load_model(tiny_cnn)
    assert handle.module is tiny_cnn and handle.kind == "module"


# --------------------------------------------------------------------------- bad input


def _assert_one_line_naming(exc: pytest.ExceptionInfo, name: str) -> None:
    assert isinstance(exc.value, EdgeoptError)
    msg = str(exc.value)
    assert "\n" not in msg, msg
    assert name in msg, msg


@pytest.mark.parametrize("suffix", [".onnx", ".pt2", ".pt", ".ts"])
def test_missing_file(tmp_path, suffix):
    path = str(tmp_path / f"nope{suffix}")
    with pytest.raises(ModelLoadError, match="does not exist") as exc:
        load_model(path)
    _assert_one_line_naming(exc, path)


@pytest.mark.parametrize("suffix", [".onnx", ".pt2", ".pt", ".ts"])
def test_corrupt_file(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError) as exc:
        load_model(str(path))
    _assert_one_line_naming(exc, str(path))


class _Trap:
    """Unpickling this creates a folder: proof that a loader ran pickle on the file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickled_full_model_is_refused_without_unpickling(tmp_path, zip_format):
    marker = tmp_path / "unpickled"
    # torch classes only, so the file unpickles anywhere (the sanity check below).
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())
    model.trap = _Trap(str(marker))
    path = tmp_path / "full.pt"
    torch.save(model, path, _use_new_zipfile_serialization=zip_format)

    with pytest.raises(ModelLoadError) as exc:
        load_model(str(path))
    _assert_one_line_naming(exc, str(path))
    if zip_format:
        assert "not TorchScript" in str(exc.value)
    assert not marker.exists()
    # The trap works: a pickle load would have sprung it.
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_weights_that_do_not_fit(tmp_path, tiny_cnn):
    weights = tmp_path / "tiny_weights.pt"
    torch.save(tiny_cnn.state_dict(), weights)
    with pytest.raises(ModelLoadError, match="does not fit the model") as exc:
        load_model("edgeopt.zoo.resnet:resnet_small", weights=str(weights))
    _assert_one_line_naming(exc, str(weights))


def test_weights_file_missing(tmp_path):
    weights = str(tmp_path / "missing.pt")
    with pytest.raises(ModelLoadError) as exc:
        load_model("edgeopt.zoo.resnet:resnet_small", weights=weights)
    _assert_one_line_naming(exc, weights)


def test_weights_holding_a_pickled_object_are_refused(tmp_path, tiny_cnn):
    marker = tmp_path / "unpickled"
    weights = tmp_path / "w.pt"
    torch.save({"state": tiny_cnn.state_dict(), "trap": _Trap(str(marker))}, weights)
    with pytest.raises(ModelLoadError) as exc:
        load_model("edgeopt.zoo.resnet:resnet_small", weights=str(weights))
    _assert_one_line_naming(exc, str(weights))
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.h5", "model"])
def test_unknown_model_kind(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError, match="cannot tell what kind") as exc:
        load_model(str(path))
    _assert_one_line_naming(exc, str(path))


def test_unimportable_factory():
    with pytest.raises(ModelLoadError) as exc:
        load_model("edgeopt.zoo.no_such_module:factory")
    _assert_one_line_naming(exc, "edgeopt.zoo.no_such_module:factory")


def test_weights_for_a_model_file_are_refused(tmp_path, tiny_cnn):
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.trace(tiny_cnn, torch.zeros(1, *INPUT_SHAPE)), str(path))
    with pytest.raises(ModelLoadError, match="--weights"):
        load_model(str(path), weights=str(path))
