import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeopt import QuantConfig, QuantSpec, apply
from edgeopt.compile.backends.onnxruntime.lower import export_onnx
from edgeopt.compile.backends.onnxruntime.runtime import make_session
from edgeopt.compress.quantize import ops
from edgeopt.compress.quantize.fake_quant import QUANT_LAYERS, ActQuant
from edgeopt.compress.quantize.qat import QATConfig
from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.core.errors import ConfigError
from edgeopt.core.train import TrainData, TrainOptions, fit

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- LSQ gradient


def _lsq_reference(x, s, z, qmin, qmax, g):
    """Esser et al.'s scale gradient, elementwise, written out independently."""
    u = x / s
    q = torch.round(u) + z
    return torch.where(q < qmin, qmin - z, torch.where(q > qmax, qmax - z, torch.round(u) - u)) * g


def test_lsq_scale_gradient_per_channel_symmetric():
    x = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(0)).mul(2).requires_grad_()
    s = torch.tensor([0.05, 0.2, 0.5], requires_grad=True)
    z = torch.zeros(3, dtype=torch.int32)
    upstream = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(1))
    ops.fake_quant(x, s, z, -7, 7, 0).backward(upstream)
    g = 1 / math.sqrt(8 * 7)  # 8 weights share each channel's scale
    ref = _lsq_reference(x.detach(), s.detach().reshape(3, 1, 1, 1), 0.0, -7, 7, g)
    expected = (upstream * ref).sum(dim=(1, 2, 3))
    assert torch.allclose(s.grad, expected, atol=1e-6)
    # the first channel's tiny scale clips at both ends: every branch is exercised
    r = (x.detach() / s.detach().reshape(3, 1, 1, 1)).round()
    assert (r > 7).any() and (r < -7).any() and (r.abs() <= 7).any()
    inside = (r.abs() <= 7).float()
    assert torch.equal(x.grad, upstream * inside)


def test_lsq_scale_gradient_per_tensor_with_zero_point():
    x = torch.linspace(-1.0, 5.0, 24).reshape(2, 12).requires_grad_()
    s = torch.tensor([0.02], requires_grad=True)
    zp = torch.tensor([40], dtype=torch.int32)
    ops.fake_quant(x, s, zp, 0, 255, -1).sum().backward()
    ref = _lsq_reference(x.detach(), 0.02, 40.0, 0, 255, 1 / math.sqrt(24 * 255))
    assert torch.allclose(s.grad, ref.sum().reshape(1), rtol=1e-5)
    # numerically the same as the slope of the (piecewise linear in s) clamped part
    assert s.grad.item() > 0  # 5.0 / 0.02 clips at the top: growing s lowers the error there


def test_lsq_scale_gradient_pow2():
    x = torch.tensor([[0.01, -0.3, 0.7, 2.5, -9.0]]).requires_grad_()
    s = torch.tensor([0.25], requires_grad=True)
    ops.fake_quant_pow2(x, s, 2, 0).sum().backward()
    u = x.detach() / 0.25
    inside = u.abs() <= 4 * 1.5
    ds = torch.where(inside, ops.pow2_round(u, 2) - u, torch.sign(u) * 4)
    assert torch.allclose(s.grad, ds.sum().reshape(1) / math.sqrt(5 * 4))
    assert torch.equal(x.grad, inside.float())


def test_no_scale_gradient_when_the_scale_is_a_plain_buffer():
    x = torch.randn(4, 3, requires_grad=True)
    s = torch.full((4,), 0.1)
    ops.fake_quant(x, s, torch.zeros(4, dtype=torch.int32), -7, 7, 0).sum().backward()
    assert s.grad is None and x.grad is not None


# --------------------------------------------------------------------------- QAT on digits


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    pre = Preprocess()
    return (TrainData(x=pre(ds.train.x), y=ds.train.y),
            torch.from_numpy(pre(ds.test.x)), torch.from_numpy(ds.test.y))


@pytest.fixture(scope="module")
def float_model(digits, make_cnn):
    model = make_cnn(width=8, hidden=32)
    fit(model, digits[0], TrainOptions(epochs=6, lr=3e-3, batch_size=64), progress=False)
    return model.eval()


def _loss(model, data: TrainData) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(data.x), data.y))


def _onnx_logits(gm, x) -> np.ndarray:
    return make_session(export_onnx(gm, [1, 8, 8]).SerializeToString()).run(
        None, {"input": x.numpy()})[0]


@pytest.mark.parametrize("bits", [4, 2])
def test_qat_lowers_the_loss_and_still_exports(float_model, digits, bits):
    train, x_test, _ = digits
    cfg = QuantConfig(weights=QuantSpec(bits=bits, per_channel=True), calib_size=256)
    ptq = apply(float_model, cfg, data=train.x, progress=False)
    ptq_state = {k: v.clone() for k, v in ptq.state_dict().items()}
    qat = apply(ptq, QATConfig(steps=40, lr=1e-3, batch_size=64), data=train, progress=False)

    assert _loss(qat, train) < 0.9 * _loss(ptq, train)
    for k, v in ptq.state_dict().items():  # the input model is left alone
        assert torch.equal(v, ptq_state[k]), k
    meta = qat.meta["edgeopt"]
    assert meta["qat"]["steps"] == 40 and meta["qat"]["resumed_from"] is None
    assert meta["precision"] == ptq.meta["edgeopt"]["precision"]
    assert not qat.training

    layers = [m for m in qat.modules() if isinstance(m, QUANT_LAYERS)]
    ptq_layers = [m for m in ptq.modules() if isinstance(m, QUANT_LAYERS)]
    assert any(not torch.equal(a.w_scale, b.w_scale) for a, b in zip(layers, ptq_layers))
    for layer in layers:
        ints = layer.int_weight()
        assert ints.abs().max() <= 2 ** (bits - 1) - 1
        assert (layer.w_scale > 0).all() and not layer.w_scale.requires_grad

    with torch.no_grad():
        sim = qat(x_test).numpy()
    got = _onnx_logits(qat, x_test)
    # ORT requantizes in fixed point: allow a few output steps, and near-total agreement
    assert np.abs(got - sim).max() < 0.05 * np.abs(sim).max()
    assert (got.argmax(1) == sim.argmax(1)).mean() > 0.97


def test_qat_pow2_weights_stay_on_the_pow2_grid(float_model, digits):
    train = digits[0]
    spec = QuantSpec(bits=3, per_channel=True, scheme="pow2")
    ptq = apply(float_model, QuantConfig(weights=spec, calib_size=256), data=train.x,
                progress=False)
    qat = apply(ptq, QATConfig(steps=40, lr=1e-3), data=train, progress=False)
    assert _loss(qat, train) < _loss(ptq, train)
    for layer in (m for m in qat.modules() if isinstance(m, QUANT_LAYERS)):
        assert set(layer.int_weight().unique().tolist()) <= {-4, -2, -1, 0, 1, 2, 4}
        deq = layer.int_weight().float() * layer.w_scale.reshape(-1, *[1] * (layer.weight.dim() - 1))
        assert torch.allclose(deq, layer.quantized_weight(), atol=1e-7)


# --------------------------------------------------------------------------- structure


@pytest.fixture
def labelled(calib) -> TrainData:
    return TrainData(x=calib, y=torch.randint(0, 5, (len(calib),),
                                              generator=torch.Generator().manual_seed(0)))


def test_shared_grids_stay_tied_and_bias_scales_follow(ptq_cnn, calib, labelled):
    ptq = apply(ptq_cnn, QuantConfig(calib_size=64), data=calib, progress=False)
    qat = apply(ptq, QATConfig(steps=10, lr=1e-2, batch_size=16), data=labelled, progress=False)
    quantizers = {n: m for n, m in qat.named_modules() if isinstance(m, ActQuant)}
    before = {n: m.scale.clone() for n, m in ptq.named_modules() if isinstance(m, ActQuant)}
    assert any(not torch.equal(q.scale, before[n]) for n, q in quantizers.items())
    shared = [q for q in quantizers.values() if q.shared_from]
    assert shared
    for q in shared:
        src = quantizers[q.shared_from]
        assert torch.equal(q.scale, src.scale)
        assert q.scale is not src.scale  # separate buffers again after training
    for node in qat.graph.nodes:
        if node.op == "call_module" and isinstance(qat.get_submodule(node.target), QUANT_LAYERS):
            layer = qat.get_submodule(node.target)
            act = qat.get_submodule(node.args[0].target)
            assert torch.allclose(layer.bias_scale, act.scale * layer.w_scale)
    for q in quantizers.values():
        assert (q.scale > 0).all() and not q.scale.requires_grad


def test_fixed_scales_when_not_learned(ptq_cnn, calib, labelled):
    ptq = apply(ptq_cnn, QuantConfig(calib_size=64), data=calib, progress=False)
    qat = apply(ptq, QATConfig(steps=5, lr=1e-2, learn_scales=False), data=labelled,
                progress=False)
    for (name, a), b in zip(ptq.state_dict().items(), qat.state_dict().values(), strict=True):
        if name.endswith("scale") and "bias" not in name:
            assert torch.equal(a, b), name
    assert not torch.equal(ptq.get_submodule("conv1").weight, qat.get_submodule("conv1").weight)


def test_qat_resume_from_checkpoint(ptq_cnn, calib, labelled, tmp_path):
    ptq = apply(ptq_cnn, QuantConfig(calib_size=64), data=calib, progress=False)
    ref = apply(ptq, QATConfig(steps=8, lr=1e-2, batch_size=16), data=labelled, progress=False)
    ckpt = str(tmp_path / "qat.pt")
    half = QATConfig(steps=8, lr=1e-2, batch_size=16, checkpoint=ckpt, checkpoint_every=4)
    first = apply(ptq, half.replace(max_seconds=1e-9), data=labelled, progress=False)
    assert first.meta["edgeopt"]["qat"]["stopped_by"] == "time"
    done = apply(ptq, half.replace(resume=True), data=labelled, progress=False)
    assert done.meta["edgeopt"]["qat"]["resumed_from"] == first.meta["edgeopt"]["qat"]["steps"]
    for (name, a), b in zip(ref.state_dict().items(), done.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_qat_needs_labelled_training_data(ptq_cnn, calib):
    ptq = apply(ptq_cnn, QuantConfig(calib_size=32), data=calib, progress=False)
    for data in (None, calib, TrainData(x=calib)):
        with pytest.raises(ConfigError, match=r"^qat needs labelled training data"):
            apply(ptq, QATConfig(steps=1), data=data)
    with pytest.raises(ConfigError, match="put a quantize step before qat"):
        apply(ptq_cnn, QATConfig(steps=1), data=TrainData(x=calib, y=np.zeros(96, np.int64)))


def test_config_defaults_and_round_trip():
    cfg = QATConfig()
    assert cfg.epochs == 1.0 and cfg.learn_scales and QATConfig.needs_training_data
    again = QATConfig.from_dict(cfg.replace(steps=30, optimizer="sgd").to_dict())
    assert again == cfg.replace(steps=30, optimizer="sgd")
    with pytest.raises(ConfigError):
        QATConfig(steps=10, scale_lr=0)
