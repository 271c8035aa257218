"""TVM's size model: integer weights at their int8 container width, float tensors at 4
bytes. Needs no TVM (it measures the lowering, not a build)."""

import pytest
import torch

from edgeopt import QuantSpec, apply
from edgeopt.compile.api import prepare
from edgeopt.compile.backends.registry import get_backend
from edgeopt.compress.quantize.spec import QuantConfig

TVM = get_backend("tvm").size_model
ORT = get_backend("onnxruntime").size_model


@pytest.fixture
def models(make_cnn):
    """The BN-folded canonical float model and its 8-, 4- and 2-bit weight versions."""
    calib = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = make_cnn(width=8, hidden=16)
    out = {"fp32": prepare(model, [1, 8, 8])[0]}
    for bits in (8, 4, 2):
        cfg = QuantConfig(weights=QuantSpec(bits=bits, symmetric=True, per_channel=True),
                          calib_size=64)
        out[bits] = apply(model, cfg, data=calib, progress=False)
    return out


def test_float_tensors_count_four_bytes_each(models):
    gm = models["fp32"]
    floats = sum(t.numel() for t in [*gm.parameters(), *gm.buffers()])
    assert TVM(gm) == 4 * floats


def test_sub_8_bit_weights_cost_what_int8_ones_do(models):
    # TVM has no packed storage: every width up to 8 bits is an int8 container ...
    assert TVM(models[2]) == TVM(models[4]) == TVM(models[8])
    # ... while ONNX Runtime's file shrinks with the width.
    assert ORT(models[2]) < ORT(models[4]) < ORT(models[8])
    # int8 weights are a quarter of float ones, plus per-channel scales and biases.
    assert 0.25 < TVM(models[8]) / TVM(models["fp32"]) < 0.4
