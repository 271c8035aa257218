"""Power-of-two weights: the stored form, log-domain rounding, and the shift-add kernel."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeopt import QuantConfig, QuantSpec, apply
from edgeopt.compress.quantize import ops
from edgeopt.compress.quantize.fake_quant import ActQuant, QuantConv2d, QuantLinear
from edgeopt.compress.quantize.pow2_kernel import decompose, integer_bias, shift_add_layer
from edgeopt.core.errors import ConfigError


def test_levels_are_sign_plus_exponent():
    for bits, mags in [(2, [1]), (3, [1, 2, 4]), (4, [1, 2, 4, 8, 16, 32, 64])]:
        spec = QuantSpec(bits=bits, scheme="pow2")
        assert spec.levels() == sorted([-m for m in mags] + [0] + mags)
        assert len(spec.levels()) <= 2**bits
    with pytest.raises(ConfigError, match="2..4 bits"):
        QuantSpec(bits=5, scheme="pow2")
    with pytest.raises(ConfigError, match="symmetric"):
        QuantSpec(bits=4, scheme="pow2", symmetric=False)


def test_rounding_is_in_the_log_domain():
    q = torch.tensor([0.0, 0.3, 0.6, 1.4, 1.45, 2.8, 2.9, -5.0, -6.0, 100.0])
    # 1.45 > sqrt(2) rounds up to 2 (linear rounding would give 1); 2.9 > 2*sqrt(2) -> 4.
    expect = [0, 0, 1, 1, 2, 2, 4, -4, -8, 64]
    assert ops.pow2_round(q, 6).tolist() == expect


@pytest.fixture
def pow2_model(ptq_cnn, calib):
    cfg = QuantConfig(weights=QuantSpec(bits=4, scheme="pow2", per_channel=True, observer="mse"),
                      calib_size=64)
    return apply(ptq_cnn, cfg, data=calib, progress=False)


def test_every_stored_weight_is_a_signed_power_of_two(pow2_model):
    layers = [m for m in pow2_model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    assert layers
    for layer in layers:
        q = layer.int_weight()
        mag = q.abs()
        nz = mag[mag > 0]
        assert torch.all(nz == 2 ** torch.log2(nz.float()).round()), "not a power of two"
        assert int(mag.max()) <= 2**layer.w_spec.kmax
        shape = (-1,) + (1,) * (q.dim() - 1)
        deq = q.float() * layer.w_scale.reshape(shape)
        assert torch.equal(layer.quantized_weight(), deq)
    assert set(pow2_model.meta["edgeopt"]["precision"].values()) == {"w4pow2a8"}


def _layer_input(gm, name):
    """The quantized input a layer sees (its ActQuant) for the calibration batch."""
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == name:
            return gm.get_submodule(node.args[0].target)
    raise KeyError(name)


def test_shift_add_kernel_reproduces_the_integer_output(pow2_model, calib):
    conv = pow2_model.get_submodule("conv1")
    act = _layer_input(pow2_model, "conv1")
    assert isinstance(act, ActQuant)
    s_in, zp = float(act.scale), int(act.zero_point)
    x_int = torch.clamp(torch.round(calib[:8] / s_in) + zp, 0, 255) - zp
    acc = shift_add_layer(conv, x_int.numpy(), integer_bias(conv))
    # The same accumulator with multiplications, in exact integer arithmetic (float64).
    ref = F.conv2d(x_int.double(), conv.int_weight().double(), None, conv.stride, conv.padding)
    ref = ref + torch.from_numpy(integer_bias(conv)).double().reshape(1, -1, 1, 1)
    assert np.array_equal(acc, ref.numpy().astype(np.int64))
    # ... and it is the simulated layer's output divided by its scale.
    with torch.no_grad():
        y = conv(x_int * s_in).double()
    grid = y / (s_in * conv.w_scale.double().reshape(1, -1, 1, 1))
    assert torch.allclose(grid, torch.from_numpy(acc).double(), atol=1e-2 * acc.std())


def test_shift_add_linear_and_errors(pow2_model):
    fc = pow2_model.get_submodule("fc")
    x = np.random.default_rng(0).integers(-128, 128, size=(4, fc.in_features))
    acc = shift_add_layer(fc, x)
    assert np.array_equal(acc, x @ fc.int_weight().numpy().astype(np.int64).T)
    with pytest.raises(ConfigError, match="not all 0"):
        decompose(np.array([3, 4]))
    uniform = QuantLinear.from_float(torch.nn.Linear(4, 2), QuantSpec(bits=4))
    with pytest.raises(ConfigError, match="pow2"):
        shift_add_layer(uniform, np.zeros((1, 4)))


def test_pow2_survives_pt2_round_trip(pow2_model, calib, tmp_path):
    from edgeopt.core.graph import export_program, lift

    ep = export_program(pow2_model, calib[:2])
    torch.export.save(ep, tmp_path / "m.pt2")
    back = lift(torch.export.load(tmp_path / "m.pt2"))
    with torch.no_grad():
        assert torch.allclose(back(calib), pow2_model(calib), atol=1e-5)
    assert back.meta["edgeopt"]["precision"]["conv1"] == "w4pow2a8"
