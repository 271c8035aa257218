"""ONNX Runtime's size model is the size of the model.onnx its export writes."""

import pytest
import torch

import edgeopt
from edgeopt import QuantSpec, apply
from edgeopt.compile.api import prepare
from edgeopt.compile.backends.registry import get_backend
from edgeopt.compress.quantize.spec import QuantConfig

SIZE = get_backend("onnxruntime").size_model


@pytest.fixture
def calib():
    return torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("bits", [None, 8, 4])
def test_size_model_is_the_artifacts_model_file(tmp_path, make_cnn, calib, bits):
    model = make_cnn(width=8, hidden=16)
    if bits is not None:
        cfg = QuantConfig(weights=QuantSpec(bits=bits, symmetric=True, per_channel=True),
                          calib_size=64)
        model = apply(model, cfg, data=calib, progress=False)
    art = edgeopt.compile(model, input_shape=[1, 8, 8], out=tmp_path / "a")
    gm, _ = prepare(model, [1, 8, 8])
    assert SIZE(gm) == (art.path / "model.onnx").stat().st_size
