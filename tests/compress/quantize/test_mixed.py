"""Mixed precision: the size model, the exact allocation, the handler and its errors."""

import itertools

import pytest
import torch

from edgeopt import QuantConfig, QuantSpec, apply
from edgeopt.compile.api import prepare
from edgeopt.compile.backends.registry import get_backend
from edgeopt.compress.quantize.fake_quant import QUANT_LAYERS
from edgeopt.compress.quantize.mixed import MixedPrecisionConfig, allocate, layer_bytes
from edgeopt.core.errors import ConfigError
from edgeopt.core.graph import leaf_modules
from edgeopt.evaluate.plots import pareto_png


def test_allocation_is_the_exact_optimum():
    costs = {"a": {2: 9.0, 4: 3.0, 8: 0.0}, "b": {2: 1.0, 4: 0.5, 8: 0.0},
             "c": {2: 5.0, 4: 1.0, 8: 0.1}}
    sizes = {n: {2: 160, 4: 320, 8: 640} for n in costs}
    for budget in (480, 800, 1000, 1300, 1920):
        got = allocate(costs, sizes, budget)
        feasible = [dict(zip(costs, p)) for p in itertools.product((2, 4, 8), repeat=3)
                    if sum(sizes[n][b] for n, b in zip(costs, p)) <= budget]
        best = min(sum(costs[n][b] for n, b in p.items()) for p in feasible)
        assert sum(costs[n][b] for n, b in got.items()) == pytest.approx(best)
        assert sum(sizes[n][b] for n, b in got.items()) <= budget
    assert allocate(costs, sizes, 400) is None


def test_layer_bytes_counts_packed_weights_scales_and_bias():
    conv = torch.nn.Conv2d(8, 16, 3)
    assert layer_bytes(conv, 4, per_channel=True) == 16 * 8 * 9 // 2 + 16 * 4 + 16 * 4
    assert layer_bytes(conv, 3, per_channel=False) == (16 * 8 * 9 * 3 + 7) // 8 + 4 + 16 * 4


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 1, 8, 8, generator=g)
    return x


def test_mixed_meets_the_budget_with_the_chosen_widths(make_cnn, data):
    model = make_cnn(width=8, hidden=16)
    cfg = MixedPrecisionConfig(budget=0.45, candidates=(2, 3, 4, 8),
                               base=QuantConfig(calib_size=128), eval_samples=200,
                               pareto_points=4)
    gm = apply(model, cfg, data=data, progress=False)
    info = gm.meta["edgeopt"]["mixed_precision"]["mixed"]
    assert info["bytes"] <= info["budget_bytes"]
    # The default backend's real ONNX file, overhead included.
    assert get_backend("onnxruntime").size_model(gm) == info["bytes"]
    bits = {n: m.w_spec.bits for n, m in leaf_modules(gm, QUANT_LAYERS)}
    assert bits == info["policy"] and set(bits.values()) <= {2, 3, 4, 8}
    labels = [p["label"] for p in info["pareto"]]
    assert "chosen" in labels and "uniform 2-bit" in labels
    # Scores are agreement with the fp32 model on held-out samples (%): 8-bit is near
    # lossless (99.6% here), 2-bit is not (78.5%), and the chosen policy scores as well
    # as the best point that fits the budget.
    by = {p["label"]: p for p in info["pareto"]}
    assert by["uniform 8-bit"]["accuracy"] >= 98 > by["uniform 2-bit"]["accuracy"]
    fits = [p["accuracy"] for p in info["pareto"] if p["bytes"] <= info["budget_bytes"]]
    assert by["chosen"]["accuracy"] >= max(fits) - 1


def test_the_budget_is_checked_in_the_given_backends_bytes(make_cnn, data):
    """A budget ONNX Runtime's packed 2-bit weights meet and TVM's int8 containers cannot."""
    model = make_cnn(width=16, hidden=32)  # wide enough for packing to beat its overhead
    w2 = QuantConfig(weights=QuantSpec(bits=2, symmetric=True, per_channel=True),
                     calib_size=64)
    q2, fp32 = apply(model, w2, data=data, progress=False), prepare(model, [1, 8, 8])[0]
    ratio = {name: b.size_model(q2) / b.size_model(fp32)
             for name, b in ((n, get_backend(n)) for n in ("onnxruntime", "tvm"))}
    assert ratio["onnxruntime"] < ratio["tvm"] - 0.05
    cfg = MixedPrecisionConfig(budget=round(sum(ratio.values()) / 2, 3), candidates=(2, 8),
                               base=QuantConfig(calib_size=64), eval_samples=64,
                               pareto_points=1)
    ort = get_backend("onnxruntime").size_model
    gm = apply(model, cfg, data=data, progress=False, size_model=ort)
    assert gm.meta["edgeopt"]["mixed_precision"]["mixed"]["bytes"] == ort(gm)
    with pytest.raises(ConfigError, match="cannot be met"):
        apply(model, cfg, data=data, progress=False, size_model=get_backend("tvm").size_model)


def test_unreachable_budget_names_the_smallest(make_cnn, data):
    cfg = MixedPrecisionConfig(budget=0.01, base=QuantConfig(calib_size=64))
    with pytest.raises(ConfigError, match=r"cannot be met; the smallest policy .* 2 bits\) is"):
        apply(make_cnn(), cfg, data=data, progress=False)


def test_config_errors():
    with pytest.raises(ConfigError, match="exactly one of budget"):
        MixedPrecisionConfig()
    with pytest.raises(ConfigError, match="bits must be an integer in 2..8"):
        MixedPrecisionConfig(budget=0.2, candidates=(1, 4))
    with pytest.raises(ConfigError, match=r"budget must be .* \(0, 1\]"):
        MixedPrecisionConfig(budget=1.5)


def test_pareto_png(tmp_path):
    points = [{"label": "uniform 4-bit", "ratio": 0.13, "accuracy": 90.0},
              {"label": "uniform 8-bit", "ratio": 0.26, "accuracy": 92.0},
              {"label": "mixed 0.160x", "ratio": 0.16, "accuracy": 91.5},
              {"label": "chosen", "ratio": 0.16, "accuracy": 91.5}]
    path = pareto_png(points, tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_sensitivity_baseline_is_untouched_by_size_measurements(make_cnn, data, monkeypatch):
    """Measuring a policy's size must leave the 8-bit baseline in place: every
    sensitivity is one layer's change from it."""
    from edgeopt.compress.quantize import mixed

    seen = []
    real = mixed.sensitivities

    def spy(qmodel, *args, **kwargs):
        seen.append({n: m.w_spec.bits for n, m in leaf_modules(qmodel, QUANT_LAYERS)})
        return real(qmodel, *args, **kwargs)

    monkeypatch.setattr(mixed, "sensitivities", spy)
    cfg = MixedPrecisionConfig(budget=0.45, candidates=(2, 4, 8), base=QuantConfig(calib_size=64),
                               eval_samples=64, pareto_points=1)
    apply(make_cnn(width=8, hidden=16), cfg, data=data, progress=False)
    assert seen and set(seen[0].values()) == {8}
