import pytest
import torch
import torch.nn.functional as F

from edgeopt import QuantConfig, QuantSpec, apply
from edgeopt.compress.quantize.adaround import _Grid
from edgeopt.compress.quantize.fake_quant import QuantConv2d, QuantLinear
from edgeopt.compress.quantize.spec import AdaRoundConfig, Scheme

LAYERS = (QuantConv2d, QuantLinear)


def _layers(q):
    return {n: m for n, m in q.named_modules() if isinstance(m, LAYERS)}


def _config(bits, iters=400, scheme=Scheme.UNIFORM, per_channel=True, symmetric=True, **kw):
    spec = QuantSpec(bits=bits, per_channel=per_channel, symmetric=symmetric, scheme=scheme)
    ada = AdaRoundConfig(iters=iters) if iters else None
    return QuantConfig(weights=spec, adaround=ada, calib_size=128, **kw)


@pytest.fixture(scope="module")
def cnn(make_cnn):
    """conv -> relu -> pool -> linear -> relu -> linear: the flatten keeps every pixel's
    contribution, so the output depends on the image and not only on its mean."""
    return make_cnn(width=8, hidden=32)


@pytest.fixture(scope="module")
def data():
    """(calibration, held-out) smooth random images with random contrast.

    Not uniform noise: through these nets noise gives near-constant outputs whose
    quantization error is almost all a mean shift, which bias correction removes
    and rounding cannot improve on; images with structure leave input-dependent
    error, which is what AdaRound reduces.
    """
    g = torch.Generator().manual_seed(1)

    def images(n):
        x = F.interpolate(torch.rand(n, 1, 4, 4, generator=g), size=8, mode="bilinear")
        return x * 2 * torch.rand(n, 1, 1, 1, generator=g)

    return images(128), images(400)


@pytest.mark.parametrize("bits,per_channel,symmetric", [(4, True, True), (3, True, True),
                                                       (4, False, False)])
def test_weights_lie_on_the_grid_one_step_from_nearest(ptq_cnn, data, bits, per_channel,
                                                       symmetric):
    # ptq_cnn: a depthwise conv, ReLU6 and a residual add besides the plain layers
    calib, _ = data
    cfg = _config(bits, iters=200, per_channel=per_channel, symmetric=symmetric,
                  bias_correction=False)
    plain = apply(ptq_cnn, cfg.replace(adaround=None), data=calib, progress=False)
    ada = apply(ptq_cnn, cfg, data=calib, progress=False)
    changed = 0
    for name, layer in _layers(ada).items():
        ref = plain.get_submodule(name)
        assert torch.equal(layer.w_scale, ref.w_scale)
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        scale = layer.w_scale.reshape(shape) if per_channel else layer.w_scale
        zp = layer.w_zero_point.reshape(shape) if per_channel else layer.w_zero_point
        ints = layer.int_weight()
        # exactly on the grid: the exporter's round-to-nearest keeps the learned rounding
        assert torch.equal((ints - zp).float() * scale, layer.weight.detach())
        assert torch.equal(layer.quantized_weight(), layer.weight.detach())
        q = ref.weight.detach() / scale + zp
        lo = q.floor().clamp(layer.w_spec.qmin, layer.w_spec.qmax)
        hi = q.ceil().clamp(layer.w_spec.qmin, layer.w_spec.qmax)
        assert bool(((ints == lo) | (ints == hi)).all())
        assert int((ints - ref.int_weight()).abs().max()) <= 1
        changed += int((ints != ref.int_weight()).sum())
    assert changed > 0  # it learned something other than round-to-nearest


@pytest.mark.parametrize("bits", [4, 3])
def test_layer_reconstruction_beats_nearest(cnn, data, bits):
    calib, _ = data
    ada = apply(cnn, _config(bits), data=calib, progress=False)
    report = ada.meta["edgeopt"]["quantize"]["adaround"]
    assert set(report) == set(_layers(ada))
    for name, r in report.items():
        assert r["mse_adaround"] <= r["mse_nearest"], name
        assert r["kept"] == "adaround"
    # the whole set of layers gains clearly, not just by noise
    total_near = sum(r["mse_nearest"] for r in report.values())
    total_ada = sum(r["mse_adaround"] for r in report.values())
    assert total_ada < 0.8 * total_near


def test_model_output_error_is_lower_than_plain_ptq(cnn, data):
    calib, held_out = data
    plain = apply(cnn, _config(4, iters=0), data=calib, progress=False)  # with bias correction
    ada = apply(cnn, _config(4), data=calib, progress=False)
    with torch.no_grad():
        ref = cnn(held_out)
        err_plain = float((plain(held_out) - ref).pow(2).mean())
        err_ada = float((ada(held_out) - ref).pow(2).mean())
    assert err_ada < 0.8 * err_plain
    assert "adaround" not in plain.meta["edgeopt"]["quantize"]


def test_pow2_rounding_picks_a_neighbouring_power(cnn, data):
    calib, held_out = data
    cfg = _config(3, scheme=Scheme.POW2, bias_correction=False)
    plain = apply(cnn, cfg.replace(adaround=None), data=calib, progress=False)
    ada = apply(cnn, cfg, data=calib, progress=False)
    levels = torch.tensor(cfg.weights.levels())
    for name, layer in _layers(ada).items():
        ref = plain.get_submodule(name)
        ints = layer.int_weight()
        assert torch.isin(ints, levels).all()
        assert torch.equal(layer.quantized_weight(), layer.weight.detach())
        # one step along the level list from nearest, never a sign change
        pos = torch.searchsorted(levels, ints.flatten())
        ref_pos = torch.searchsorted(levels, ref.int_weight().flatten())
        assert int((pos - ref_pos).abs().max()) <= 1
        assert bool((ints * ref.int_weight() >= 0).all())
    report = ada.meta["edgeopt"]["quantize"]["adaround"]
    assert sum(r["mse_adaround"] for r in report.values()) < sum(
        r["mse_nearest"] for r in report.values()
    )


@pytest.mark.parametrize("scheme", [Scheme.UNIFORM, Scheme.POW2])
def test_initial_rounding_is_round_to_nearest(scheme):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3)
    layer = QuantConv2d.from_float(conv, QuantSpec(bits=3, per_channel=True, scheme=scheme))
    grid = _Grid(layer)
    # the relaxation starts at the float weights, and thresholding it at 0.5 is
    # the rounding the fake-quant op does (log-domain for pow2)
    assert torch.allclose(grid.weight(grid.init_h), layer.weight.detach(), atol=1e-6)
    hard = grid.weight((grid.init_h >= 0.5).float())
    assert torch.equal(hard, layer.quantized_weight().detach())
