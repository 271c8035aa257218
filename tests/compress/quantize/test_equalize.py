import pytest
import torch
from torch import nn

from edgeopt import QuantConfig, QuantSpec, apply
from edgeopt.compress.fold_bn import fold_batchnorm
from edgeopt.compress.quantize.equalize import EqualizeConfig, in_ranges, out_ranges
from edgeopt.core.canonical import canonical_copy
from edgeopt.core.errors import ConfigError

aten = torch.ops.aten


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyMobile(nn.Module):
    """stem -> inverted residual (pointwise -> depthwise -> pointwise) -> pool -> linear."""

    def __init__(self, act: type[nn.Module]) -> None:
        super().__init__()

        def cba(cin, cout, k, groups=1):
            return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups,
                                           bias=False), nn.BatchNorm2d(cout), act())

        self.stem = cba(1, 8, 3)
        self.expand = cba(8, 24, 1)
        self.dw = cba(24, 24, 3, groups=24)
        self.project = nn.Sequential(nn.Conv2d(24, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = self.stem(x)
        y = y + self.project(self.dw(self.expand(y)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def tiny_mobile(act=nn.ReLU, seed=0, high_bias=False) -> TinyMobile:
    """Channel scales spread over three decades between paired layers (layer 1 by s, layer
    2's input by 1/s: the same function), which is what makes per-tensor ranges unequal and
    per-tensor quantization bad in real depthwise networks."""
    torch.manual_seed(seed)
    model = TinyMobile(act)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.3)
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            if high_bias:
                bn.bias.add_(3 * bn.weight)  # pre-activations mostly positive: absorbable
        if act is nn.ReLU:
            for bn, nxt in ((model.expand[1], model.dw[0]), (model.dw[1], model.project[0])):
                s = 10 ** torch.empty(bn.num_features).uniform_(-1.5, 1.5)
                bn.weight.mul_(s)
                bn.bias.mul_(s)
                if nxt.groups == 1:
                    nxt.weight.div_(s.reshape(1, -1, 1, 1))
                else:
                    nxt.weight.div_(s.reshape(-1, 1, 1, 1))
    return model.eval()


@pytest.fixture
def data():
    return torch.rand(128, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _rel_diff(ref, out) -> float:
    return float((ref - out).abs().max() / ref.abs().max())


def test_relu_network_function_is_unchanged(data):
    model = tiny_mobile()
    eq = apply(model, EqualizeConfig(bias_absorption=False), data=data, progress=False)
    with torch.no_grad():
        assert _rel_diff(model(data), eq(data)) < 1e-5
    meta = eq.meta["edgeopt"]["equalize"]
    # the stem also feeds the residual add, and project reaches fc through it: not paired
    assert [p[:2] for p in meta["pairs"]] == [["expand.0", "dw.0"], ["dw.0", "project.0"]]
    assert meta["converged"] and meta["folded_bn"]


def test_paired_ranges_become_equal(data):
    model = tiny_mobile()
    cfg = EqualizeConfig(bias_absorption=False, tolerance=1e-6)
    eq = apply(model, cfg, data=data, progress=False)
    pairs = eq.meta["edgeopt"]["equalize"]["pairs"]
    spread = []
    for first, second, _ in pairs:
        r1 = out_ranges(eq.get_submodule(first))
        r2 = in_ranges(eq.get_submodule(second))
        torch.testing.assert_close(r1, r2, rtol=1e-4, atol=0)
        spread.append(float(r1.max() / r1.min()))
    # and the channels of each first layer end up closer in range than they started
    gm = canonical_copy(model, data[:2])
    fold_batchnorm(gm)
    for (first, _, _), s in zip(pairs, spread, strict=True):
        r = out_ranges(gm.get_submodule(first))
        assert s < float(r.max() / r.min())


def test_high_bias_absorption(data):
    model = tiny_mobile(high_bias=True)
    plain = apply(model, EqualizeConfig(bias_absorption=False), data=data, progress=False)
    eq = apply(model, EqualizeConfig(), data=data, progress=False)
    meta = eq.meta["edgeopt"]["equalize"]
    # dw -> project is 1x1: absorbed; expand -> the padded 3x3 depthwise is not.
    assert set(meta["absorbed"]) == {"dw.0"}
    assert [s["pair"] for s in meta["skipped"]] == [["expand.0", "dw.0"]]
    assert meta["absorbed"]["dw.0"]["channels"] > 0
    b_plain = plain.get_submodule("dw.0").bias.abs().sum()
    b_eq = eq.get_submodule("dw.0").bias.abs().sum()
    assert b_eq < 0.5 * b_plain
    x = torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert _rel_diff(model(x), eq(x)) < 1e-2
        # The pre-activation range the next quantizer covers shrinks.
        pre = {}
        for gm, key in ((plain, "plain"), (eq, "eq")):
            h = gm.get_submodule("dw.0").register_forward_hook(
                lambda _m, _i, o, key=key: pre.__setitem__(key, o.clamp_min(0).amax()))
            gm(x)
            h.remove()
    assert pre["eq"] < pre["plain"]


def test_absorbing_into_padded_layers_is_inexact_at_borders(data):
    model = tiny_mobile(high_bias=True)
    exact = apply(model, EqualizeConfig(), data=data, progress=False)
    padded = apply(model, EqualizeConfig(absorb_padded=True), data=data, progress=False)
    assert "expand.0" in padded.meta["edgeopt"]["equalize"]["absorbed"]
    with torch.no_grad():
        assert _rel_diff(model(data), padded(data)) > _rel_diff(model(data), exact(data))


def test_relu6_replace_or_skip(data):
    model = tiny_mobile(act=nn.ReLU6)
    skip = apply(model, EqualizeConfig(relu6="skip"), data=data, progress=False)
    assert skip.meta["edgeopt"]["equalize"]["pairs"] == []
    assert len(skip.meta["edgeopt"]["equalize"]["skipped"]) == 2
    with torch.no_grad():
        assert _rel_diff(model(data), skip(data)) < 1e-6

    rep = apply(model, EqualizeConfig(bias_absorption=False), data=data, progress=False)
    assert len(rep.meta["edgeopt"]["equalize"]["relu6_replaced"]) == 2
    targets = [n.target for n in rep.graph.nodes if n.op == "call_function"]
    assert targets.count(aten.relu.default) == 2
    assert targets.count(aten.hardtanh.default) == 1  # the stem's, outside any pair
    assert [p[2] for p in rep.meta["edgeopt"]["equalize"]["pairs"]] == ["relu6"] * 2


def test_equalized_model_quantizes_better_per_tensor(data):
    model = tiny_mobile()
    cfg = QuantConfig(weights=QuantSpec(bits=8, per_channel=False), bias_correction=False,
                      calib_size=128)
    x = torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    plain_q = apply(model, cfg, data=data, progress=False)
    eq = apply(model, EqualizeConfig(), data=data, progress=False)
    eq_q = apply(eq, cfg, data=data, progress=False)
    # quantize keeps the equalized weights (canonical_copy of a canonical model)
    assert torch.equal(eq_q.get_submodule("dw.0").weight, eq.get_submodule("dw.0").weight)
    with torch.no_grad():
        ref = model(x)
        err_plain = float((plain_q(x) - ref).pow(2).mean())
        err_eq = float((eq_q(x) - ref).pow(2).mean())
    assert err_eq < 0.5 * err_plain, (err_eq, err_plain)


def test_config_round_trip_and_validation():
    cfg = EqualizeConfig.from_dict({"relu6": "skip", "iterations": 10})
    assert cfg.relu6.value == "skip"
    assert EqualizeConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="relu6"):
        EqualizeConfig(relu6="clip")
    with pytest.raises(ConfigError, match="iterations"):
        EqualizeConfig(iterations=0)
