"""Rank selection: energy thresholds, parameter formulas and the global budget."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgeopt.compress.lowrank  # noqa: F401  (registers the handler)
from edgeopt.compress import apply
from edgeopt.compress.lowrank import LowRankConfig
from edgeopt.compress.lowrank.ranks import ConvMethod, candidate, energy_rank, meet_budget
from edgeopt.core.errors import ConfigError


def _with_singular_values(out: int, cin: int, s: list[float], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(out, len(s), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cin, len(s), generator=g, dtype=torch.float64))
    return (u * torch.tensor(s, dtype=torch.float64)) @ v.T


@pytest.mark.parametrize("energy, rank", [(0.7, 1), (0.9, 2), (0.95, 3), (0.99, 4), (1.0, 4)])
def test_energy_rank_on_known_spectrum(energy, rank):
    # squared singular values 16, 4, 1, 1 of 22: cumulative 0.727, 0.909, 0.955, 1.0
    assert energy_rank(torch.tensor([16.0, 4.0, 1.0, 1.0]), energy) == rank


def test_energy_picks_rank_of_constructed_linear():
    layer = nn.Linear(12, 10)
    with torch.no_grad():
        layer.weight.copy_(_with_singular_values(10, 12, [4, 2, 1, 1]))
    model = nn.Sequential(layer)
    got = apply(model, LowRankConfig(ranks={}, energy=0.9), progress=False)
    info = got.meta["edgeopt"]["lowrank"]["layers"]["0"]
    assert info["ranks"] == [2]
    assert info["energy_kept"][0] == pytest.approx(20 / 22, abs=1e-6)
    assert info["params_after"] == 2 * (12 + 10) + 10


@pytest.mark.parametrize("module, conv, ranks", [
    (nn.Linear(20, 12), ConvMethod.TUCKER2, [5]),
    (nn.Conv2d(16, 24, 1, bias=False), ConvMethod.TUCKER2, [7]),
    (nn.Conv2d(16, 24, 3, padding=1), ConvMethod.TUCKER2, [5, 9]),
    (nn.Conv2d(16, 24, (3, 5), padding=1), ConvMethod.CP, [11]),
])
def test_param_formula_matches_module(module, conv, ranks):
    c = candidate("layer", module, conv)
    c.ranks = ranks
    out, cin = module.weight.shape[:2]
    k = module.weight[0, 0].numel()
    if c.kind == "svd":
        expected = ranks[0] * (cin * k + out)
    elif c.kind == "tucker2":
        expected = cin * ranks[0] + ranks[0] * ranks[1] * k + ranks[1] * out
    else:
        expected = ranks[0] * (cin + out + sum(module.weight.shape[2:]))
    bias = out if module.bias is not None else 0
    assert c.params() == expected + bias
    spec = ranks[0] if len(ranks) == 1 else list(ranks)
    got = apply(nn.Sequential(module), LowRankConfig(conv=conv, ranks={"0": spec}),
                    progress=False)
    assert sum(p.numel() for p in got.parameters()) == c.params()


def test_depthwise_and_grouped_convs_are_not_candidates():
    assert candidate("dw", nn.Conv2d(8, 8, 3, groups=8), ConvMethod.TUCKER2) is None
    assert candidate("g", nn.Conv2d(8, 8, 3, groups=2), ConvMethod.CP) is None
    assert candidate("bn", nn.BatchNorm2d(8), ConvMethod.CP) is None


def test_budget_is_met_and_spends_on_the_flat_spectrum():
    torch.manual_seed(0)
    steep, flat = nn.Linear(32, 32, bias=False), nn.Linear(32, 32, bias=False)
    with torch.no_grad():
        steep.weight.copy_(_with_singular_values(32, 32, [2.0 ** -i for i in range(32)]))
        flat.weight.copy_(_with_singular_values(32, 32, [1.0] * 32, seed=1))
    model = nn.Sequential(steep, flat)
    got = apply(model, LowRankConfig(param_reduction=0.4), progress=False)
    info = got.meta["edgeopt"]["lowrank"]
    before = 2 * 32 * 32
    assert info["params_before"] == before
    assert info["params_after"] <= 0.6 * before
    assert sum(p.numel() for p in got.parameters()) == info["params_after"]
    # The steep layer's tail costs almost no energy: it is cut first, and the flat
    # layer (every rank worth the same) stays whole because splitting it cannot save.
    assert info["layers"]["0"]["ranks"][0] <= 8
    assert "1" not in info["layers"]
    assert isinstance(got[1], nn.Linear)


def test_budget_floor_is_reported():
    free = [candidate("fc", nn.Linear(10, 10, bias=False), ConvMethod.TUCKER2)]
    with pytest.raises(ConfigError, match=r"best reachable is 20 parameters \(target 5\)"):
        meet_budget(free, 0, 5)


def test_budget_that_cannot_be_met_through_the_config():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))  # 20 + 8 params; rank 1: 12 + 8
    with pytest.raises(ConfigError) as err:
        apply(model, LowRankConfig(param_reduction=0.9), progress=False)
    line = str(err.value)
    assert "\n" not in line and "best reachable is 20 parameters, -28.6% (target 2)" in line


def test_cp_budget_splits_the_big_layer_first():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 64, 3, padding=1),
                          nn.Conv2d(64, 64, 3, padding=1))
    total = sum(p.numel() for p in model.parameters())
    got = apply(model, LowRankConfig(conv="cp", param_reduction=0.5), progress=False)
    info = got.meta["edgeopt"]["lowrank"]
    # Splitting the 64x64 conv alone (its full-rank CP is already 4x smaller) meets 50%:
    # the smaller convs keep their weights.
    assert list(info["layers"]) == ["2"]
    assert info["params_after"] <= 0.5 * total
    assert isinstance(got[0], nn.Conv2d) and isinstance(got[1], nn.Conv2d)
