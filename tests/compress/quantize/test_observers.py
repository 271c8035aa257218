import numpy as np
import pytest
import torch

from edgeopt.compress.quantize.observers import (
    TensorStats,
    activation_range,
    qparams,
    weight_qparams,
)
from edgeopt.compress.quantize.spec import Observer, QuantSpec


def _stats(x: torch.Tensor, bins: int = 2048) -> TensorStats:
    st = TensorStats()
    st.update_minmax(x)
    st.start_histogram(bins)
    st.update_histogram(x)
    return st


def test_qparams_asymmetric_and_symmetric():
    scale, zp = qparams(-1.0, 3.0, QuantSpec(bits=8, symmetric=False))
    assert scale == pytest.approx(4.0 / 255)
    assert zp == round(1.0 / scale)
    scale, zp = qparams(-1.0, 3.0, QuantSpec(bits=4, symmetric=True))
    assert (scale, zp) == (pytest.approx(3.0 / 7), 0)
    # a range that excludes zero is widened so zero (padding) is exact
    scale, zp = qparams(2.0, 4.0, QuantSpec(bits=8, symmetric=False))
    assert zp == 0 and scale == pytest.approx(4.0 / 255)


def test_percentile_clips_outliers_minmax_does_not():
    x = torch.cat([torch.rand(100_000), torch.tensor([50.0])])
    st = _stats(x)
    assert activation_range(st, QuantSpec(observer=Observer.MINMAX, symmetric=False))[1] == 50.0
    lo, hi = activation_range(st, QuantSpec(observer=Observer.PERCENTILE, percentile=99.9,
                                            symmetric=False))
    assert lo == 0.0 and 0.95 < hi < 1.1


@pytest.mark.parametrize("observer", [Observer.MSE, Observer.ENTROPY])
def test_error_minimising_observers_shrink_a_heavy_tail(observer):
    gen = torch.Generator().manual_seed(0)
    x = torch.distributions.Laplace(0.0, 1.0).sample((200_000,)).abs()
    x = torch.cat([x, torch.tensor([40.0])])
    st = _stats(x)
    spec = QuantSpec(bits=4, symmetric=False, observer=observer)
    lo, hi = activation_range(st, spec)
    assert lo == 0.0
    assert 2.0 < hi < 30.0, hi  # well inside the max, well outside the bulk
    del gen


def test_mse_range_has_lower_error_than_minmax():
    x = torch.distributions.Laplace(0.0, 1.0).sample((100_000,))
    st = _stats(x)
    spec_mm = QuantSpec(bits=4, symmetric=False, observer=Observer.MINMAX)
    spec_mse = QuantSpec(bits=4, symmetric=False, observer=Observer.MSE)

    def err(spec):
        lo, hi = activation_range(st, spec)
        s, z = qparams(lo, hi, spec)
        q = torch.fake_quantize_per_tensor_affine(x, s, z, spec.qmin, spec.qmax)
        return float(((q - x) ** 2).mean())

    assert err(spec_mse) < 0.6 * err(spec_mm)


def test_weight_qparams_per_channel_symmetric():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
    scale, zp = weight_qparams(w, QuantSpec(bits=8, per_channel=True))
    assert torch.allclose(scale, torch.tensor([2.0 / 127, 0.5 / 127]))
    assert zp.tolist() == [0, 0]
    scale, _ = weight_qparams(w, QuantSpec(bits=8, per_channel=False))
    assert scale.numel() == 1 and float(scale) == pytest.approx(2.0 / 127)


def test_weight_mse_observer_clips_outlier_channel_values():
    w = torch.randn(4, 512, generator=torch.Generator().manual_seed(0))
    w[:, 0] = 20.0
    mm, _ = weight_qparams(w, QuantSpec(bits=4, per_channel=True))
    mse, _ = weight_qparams(w, QuantSpec(bits=4, per_channel=True, observer=Observer.MSE))
    assert (mse < mm).all()
    assert np.isfinite(mse.numpy()).all()
