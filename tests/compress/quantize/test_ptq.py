import numpy as np
import pytest
import torch

from edgeopt import Int8Config, QuantConfig, QuantSpec, apply
from edgeopt.compress.quantize.fake_quant import ActQuant, QuantConv2d, QuantLinear
from edgeopt.core.errors import DataError


def sqnr_db(ref: torch.Tensor, q: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).mean() / (ref - q).pow(2).mean()))


def test_int8_ptq_is_close_to_float(ptq_cnn, calib):
    q = apply(ptq_cnn, Int8Config(calib_size=64), data=calib)
    with torch.no_grad():
        assert sqnr_db(ptq_cnn(calib), q(calib)) > 30
    layers = [m for m in q.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    assert len(layers) == 3
    assert q.meta["edgeopt"]["precision"] == {"conv1": "w8a8", "conv2": "w8a8", "fc": "w8a8"}
    assert q.meta["edgeopt"]["quantize"]["folded_bn"] == ["bn1", "bn2"]


def test_user_model_is_not_modified(ptq_cnn, calib):
    before = {k: v.clone() for k, v in ptq_cnn.state_dict().items()}
    apply(ptq_cnn, Int8Config(calib_size=32), data=calib)
    for k, v in ptq_cnn.state_dict().items():
        assert torch.equal(v, before[k])


def test_placement_quantizes_what_ort_fuses(ptq_cnn, calib):
    q = apply(ptq_cnn, Int8Config(calib_size=32, bias_correction=False), data=calib)
    quantizers = {n: m for n, m in q.named_modules() if isinstance(m, ActQuant)}
    # input, relu (after conv1), relu6 (after conv2), add, maxpool (shared), gap, flatten (shared)
    shared = [n for n, m in quantizers.items() if m.shared_from]
    assert len(quantizers) == 7, sorted(quantizers)
    assert len(shared) == 2
    for name in shared:
        src = quantizers[quantizers[name].shared_from]
        assert torch.equal(quantizers[name].scale, src.scale)
    # a ReLU output is quantized with zero point 0 (so ORT can drop the ReLU)
    relu_q = [m for n, m in quantizers.items() if n.endswith("relu")]
    assert relu_q and all(int(m.zero_point) == 0 for m in relu_q)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_simulation_is_exact_on_the_integer_grid(ptq_cnn, calib, bits):
    cfg = QuantConfig(weights=QuantSpec(bits=bits, per_channel=True), calib_size=32)
    q = apply(ptq_cnn, cfg, data=calib)
    conv = q.get_submodule("conv1")
    ints = conv.int_weight()
    assert ints.min() >= -(2 ** (bits - 1) - 1) and ints.max() <= 2 ** (bits - 1) - 1
    deq = ints.float() * conv.w_scale.reshape(-1, 1, 1, 1)
    assert torch.allclose(deq, conv.quantized_weight(), atol=1e-7)
    levels = max(len(torch.unique(ints[c])) for c in range(ints.shape[0]))
    assert levels <= 2 ** bits - 1


def test_per_layer_override_and_skip(ptq_cnn, calib):
    cfg = QuantConfig(layers={"conv2": {"bits": 4}, "fc": {"skip": True}}, calib_size=32)
    q = apply(ptq_cnn, cfg, data=calib)
    assert q.get_submodule("conv2").w_spec.bits == 4
    assert q.get_submodule("conv1").w_spec.bits == 8
    assert type(q.get_submodule("fc")) is torch.nn.Linear
    assert q.meta["edgeopt"]["precision"]["fc"] == "fp32"


def test_calibration_is_seeded(ptq_cnn):
    data = torch.rand(400, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    scales = []
    for seed in (0, 0, 1):
        q = apply(ptq_cnn, Int8Config(calib_size=50, calib_seed=seed, bias_correction=False),
                  data=data)
        scales.append(torch.cat([m.scale for m in q.modules() if isinstance(m, ActQuant)]))
    assert torch.equal(scales[0], scales[1])
    assert not torch.equal(scales[0], scales[2])


def test_calibration_from_an_iterable_of_numpy_batches(ptq_cnn, calib):
    batches = (calib[i:i + 16].numpy() for i in range(0, 96, 16))
    q = apply(ptq_cnn, Int8Config(calib_size=40), data=batches)
    assert q.meta["edgeopt"]["quantize"]["calib_samples"] == 40


def test_bias_correction_reduces_output_bias(ptq_cnn, calib):
    cfg = QuantConfig(weights=QuantSpec(bits=3, per_channel=False), calib_size=96)
    plain = apply(ptq_cnn, cfg.replace(bias_correction=False), data=calib)
    corrected = apply(ptq_cnn, cfg, data=calib)
    with torch.no_grad():
        ref = ptq_cnn(calib)
        bias_plain = (plain(calib) - ref).mean(0).abs().mean()
        bias_corr = (corrected(calib) - ref).mean(0).abs().mean()
    assert bias_corr < 0.5 * bias_plain


def test_empty_calibration_set_is_refused(ptq_cnn):
    with pytest.raises(DataError, match="calibration set is empty"):
        apply(ptq_cnn, Int8Config(), data=np.zeros((0, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match="calibration data is required"):
        apply(ptq_cnn, Int8Config())
