"""LowRankConfig: validation lines, patterns, the record it leaves, fine-tuning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeopt.compress import apply
from edgeopt.compress.distill.finetune import FinetuneOptions
from edgeopt.compress.lowrank import LowRankConfig
from edgeopt.core.errors import ConfigError
from edgeopt.core.train import TrainData


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)),
        nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 10)).eval()


@pytest.mark.parametrize("kwargs, line", [
    ({"energy": 0.0}, "lowrank.energy must be in (0, 1], got 0.0"),
    ({"energy": 1.5}, "lowrank.energy must be in (0, 1], got 1.5"),
    ({"param_reduction": 1.0}, "lowrank.param_reduction must be in (0, 1), got 1.0"),
    ({"param_reduction": -0.1}, "lowrank.param_reduction must be in (0, 1), got -0.1"),
    ({"energy": 0.9, "param_reduction": 0.4}, "lowrank: set energy or param_reduction, not both"),
    ({}, "lowrank needs energy, param_reduction or ranks"),
    ({"energy": 0.9, "conv": "svd"}, "lowrank.conv: unknown value 'svd' (valid: tucker2, cp)"),
    ({"layers": {"fc": {"ranks": 0}}}, "lowrank.layers['fc']: ranks must be integers >= 1, got 0"),
    ({"layers": {"fc": {"rank": 4}}}, "lowrank.layers['fc']: unknown key 'rank' (valid: conv, "
                                      "cp_iters, energy, ranks, skip, tucker_iters)"),
])
def test_bad_values_are_one_line(kwargs, line):
    with pytest.raises(ConfigError) as err:
        LowRankConfig(**kwargs)
    assert str(err.value) == line


def test_rank_too_large_names_layer_shape_and_max():
    with pytest.raises(ConfigError) as err:
        apply(_net(), LowRankConfig(layers={"2": {"ranks": [8, 40]}}), progress=False)
    assert str(err.value) == ("lowrank.layers['2']: rank 40 out of range for layer 2 (tucker2, "
                              "shape [32, 16, 3, 3]): valid 1..32 (max ranks [16, 32])")
    with pytest.raises(ConfigError, match=r"layer 6 \(svd, shape \[10, 32\]\): valid 1\.\.10"):
        apply(_net(), LowRankConfig(layers={"6": {"ranks": 11}}), progress=False)


def test_pattern_matching_no_layer():
    # skip is refused; a layers pattern warns (the one rule of every step's policy).
    with pytest.raises(ConfigError) as err:
        apply(_net(), LowRankConfig(energy=0.9, skip=["nothing"]), progress=False)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("lowrank.skip: pattern ") and "matches no factorisable layer" in line
    assert "layers: 0.0, 2, 6" in line
    with pytest.warns(UserWarning, match=r"lowrank: layer pattern 'head\.\*' matches no layer; "
                                         r"layers are: 0\.0, 2, 6"):
        apply(_net(), LowRankConfig(energy=0.9, layers={"head.*": {"ranks": 4}}), progress=False)


def test_container_pattern_skip_and_untouched_original():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    got = apply(net, LowRankConfig(ranks={"0": [2, 4], "*": 3}, skip=["6"]), progress=False)
    # "0" names the conv_bn container: its conv (0.0) gets [2, 4]; "*" takes the rest.
    layers = got.meta["edgeopt"]["lowrank"]["layers"]
    assert {k: v["ranks"] for k, v in layers.items()} == {"0.0": [2, 4], "2": [3, 3]}
    assert isinstance(got[6], nn.Linear) and isinstance(got[0][1], nn.BatchNorm2d)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert isinstance(net[2], nn.Conv2d) and not hasattr(net, "meta")


def test_meta_record_and_existing_meta_kept():
    net = _net()
    net.meta = {"edgeopt": {"prune": {"sparsity": 0.5}}}
    got = apply(net, LowRankConfig(energy=0.8), progress=False)
    meta = got.meta["edgeopt"]
    assert meta["prune"] == {"sparsity": 0.5}
    info = meta["lowrank"]
    assert info["params_before"] == sum(p.numel() for p in net.parameters())
    assert info["params_after"] == sum(p.numel() for p in got.parameters())
    assert info["param_reduction"] == pytest.approx(
        1 - info["params_after"] / info["params_before"], abs=1e-6)
    for rec in info["layers"].values():
        assert rec["params_after"] < rec["params_before"]
        assert all(e >= 0.8 for e in rec["energy_kept"])
    assert info["config"]["energy"] == 0.8


def test_from_dict_round_trip():
    with pytest.warns(DeprecationWarning, match=r"write `layers: \{fc: \{ranks: 4\}, "):
        cfg = LowRankConfig.from_dict({"conv": "cp", "ranks": {"fc": 4, "layer3.*": [8, 8]},
                                       "skip": ["stem.*"], "finetune": {"steps": 2, "lr": 1e-3}})
    assert isinstance(cfg.finetune, FinetuneOptions) and cfg.finetune.steps == 2
    assert cfg.ranks is None and cfg.layers == {"fc": {"ranks": 4}, "layer3.*": {"ranks": (8, 8)}}
    assert LowRankConfig.from_dict(cfg.to_dict()) == cfg


def test_finetune_distils_and_is_recorded():
    net = _net()
    g = torch.Generator().manual_seed(0)
    data = TrainData(x=torch.randn(64, 3, 8, 8, generator=g),
                     y=torch.randint(0, 10, (64,), generator=g))
    cfg = LowRankConfig(param_reduction=0.4, finetune=FinetuneOptions(steps=3, batch_size=16))
    got = apply(net, cfg, data=data, progress=False)
    ft = got.meta["edgeopt"]["lowrank"]["finetune"]
    assert ft["steps"] == 3 and ft["distill"] is True and ft["train_samples"] == 64
    assert got.meta["edgeopt"]["lowrank"]["param_reduction"] >= 0.4
    assert not got.training
    with pytest.raises(ConfigError, match=r"^lowrank.finetune needs training data .*got nothing$"):
        apply(net, cfg, progress=False)


def test_the_old_ranks_spelling_factorises_as_the_new_one():
    with pytest.warns(DeprecationWarning, match=r'write `layers: \{"0": \{ranks: \[2, 4\]\}, '
                                                r'"\*": \{ranks: 3\}\}`'):
        old = LowRankConfig(ranks={"0": [2, 4], "*": 3}, skip=["6"])
    new = LowRankConfig(layers={"0": {"ranks": [2, 4]}, "*": {"ranks": 3}}, skip=["6"])
    assert old == new
    got = [{k: v["ranks"] for k, v in apply(_net(), c, progress=False)
            .meta["edgeopt"]["lowrank"]["layers"].items()} for c in (old, new)]
    assert got[0] == got[1] == {"0.0": [2, 4], "2": [3, 3]}


def test_a_layer_entry_sets_its_own_energy_and_skip():
    cfg = LowRankConfig(energy=0.999, layers={"2": {"energy": 0.3}, "6": {"skip": True}})
    layers = apply(_net(), cfg, progress=False).meta["edgeopt"]["lowrank"]["layers"]
    assert "6" not in layers and "0.0" not in layers  # 0.999 keeps it whole: no saving
    alone = apply(_net(), LowRankConfig(energy=0.3), progress=False).meta["edgeopt"]["lowrank"]
    assert layers["2"]["ranks"] == alone["layers"]["2"]["ranks"]  # what a global 0.3 gives
    assert all(e >= 0.3 for e in layers["2"]["energy_kept"])
