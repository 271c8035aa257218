"""The factorised modules: exact at full rank, the right structure, export through ORT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edgeopt
from edgeopt.compress import apply
from edgeopt.compress.lowrank import LowRankConfig
from edgeopt.compress.lowrank.svd import split_linear, split_pointwise
from edgeopt.compress.lowrank.tucker import cp, tucker2


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p)
    return module.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


def test_linear_full_rank_is_exact_and_truncation_is_optimal():
    layer = _seeded(nn.Linear(12, 9))
    x = torch.randn(5, 12)
    full = split_linear(layer, 9)
    assert [type(m) for m in full] == [nn.Linear, nn.Linear]
    assert full[0].bias is None and full[1].bias is not None
    assert _rel(full(x), layer(x)) < 1e-5
    # Rank 3 is the best rank-3 approximation: its error is the tail of the spectrum.
    s = torch.linalg.svdvals(layer.weight.detach().double())
    three = split_linear(layer, 3)
    w3 = (three[1].weight @ three[0].weight).detach()
    err = torch.linalg.matrix_norm((layer.weight.detach() - w3).double())
    assert float(err) == pytest.approx(float(s[3:].square().sum().sqrt()), rel=1e-4)


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1)])
def test_pointwise_full_rank_is_exact(stride, padding):
    conv = _seeded(nn.Conv2d(6, 10, 1, stride=stride, padding=padding))
    x = torch.randn(2, 6, 7, 7)
    split = split_pointwise(conv, 6)
    assert [m.kernel_size for m in split] == [(1, 1), (1, 1)]
    assert _rel(split(x), conv(x)) < 1e-5


@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_tucker2_full_rank_is_exact(stride, padding, dilation):
    conv = _seeded(nn.Conv2d(6, 10, 3, stride=stride, padding=padding, dilation=dilation))
    x = torch.randn(2, 6, 9, 9)
    seq, err = tucker2(conv, 6, 10)
    assert err < 1e-10
    first, core, last = seq
    assert (first.kernel_size, core.kernel_size, last.kernel_size) == ((1, 1), (3, 3), (1, 1))
    assert (first.bias, core.bias) == (None, None) and last.bias is not None
    assert core.stride == conv.stride and core.dilation == conv.dilation
    assert _rel(seq(x), conv(x)) < 1e-5


def test_tucker2_truncation_error_matches_reported():
    conv = _seeded(nn.Conv2d(8, 12, 3, padding=1, bias=False))
    seq, err = tucker2(conv, 4, 6)
    first, core, last = seq
    w = torch.einsum("oa,abhw,bi->oihw", last.weight[:, :, 0, 0], core.weight,
                     first.weight[:, :, 0, 0])
    w, ref = w.detach(), conv.weight.detach()
    assert err == pytest.approx(float((w - ref).norm() / ref.norm()), rel=1e-4)
    assert 0.1 < err < 1.0


def test_cp_recovers_an_exactly_low_rank_kernel():
    g = torch.Generator().manual_seed(0)
    a, b, c, d = (torch.randn(n, 3, generator=g) for n in (10, 6, 3, 3))
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("or,ir,hr,wr->oihw", a, b, c, d))
    seq, err = cp(conv, 3, iters=300)
    assert err < 1e-4
    first, vertical, horizontal, last = seq
    assert vertical.groups == 3 and vertical.kernel_size == (3, 1) and vertical.stride == (2, 1)
    assert horizontal.groups == 3 and horizontal.kernel_size == (1, 3)
    assert horizontal.stride == (1, 2) and last.bias is not None
    x = torch.randn(2, 6, 9, 9)
    assert _rel(seq(x), conv(x)) < 1e-3


class Net(nn.Module):
    """Every kind of layer the step meets, on 3x8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.conv2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 24, 1)
        self.fc = nn.Linear(24 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = self.pw(torch.relu(self.dw(torch.relu(self.conv2(x)))))
        return self.fc(torch.flatten(x, 1))


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


@pytest.mark.parametrize("conv", ["tucker2", "cp"])
def test_export_round_trip_through_ort(net, conv, tmp_path):
    cfg = LowRankConfig(conv=conv, ranks={"conv1": [3, 6] if conv == "tucker2" else 6,
                                          "conv2": [8, 8] if conv == "tucker2" else 8,
                                          "pw": 8, "fc": 6})
    model = apply(net, cfg, progress=False)
    assert isinstance(model.dw, nn.Conv2d)  # depthwise: left alone
    assert isinstance(model.conv1[0], nn.Sequential) and isinstance(model.conv1[1], nn.BatchNorm2d)
    assert len(model.conv2) == (3 if conv == "tucker2" else 4)
    art = edgeopt.compile(model, out=tmp_path / "art", input_shape=[3, 8, 8])
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    got = art.load().run(x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_full_ranks_reproduce_the_whole_model(net):
    full = apply(net, LowRankConfig(ranks={"conv1": [3, 16], "conv2": [16, 16],
                                               "pw": 16, "fc": 10}), progress=False)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert _rel(full(x), net(x)) < 1e-5
