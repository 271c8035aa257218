"""batchnorm_for_training: BN put back around training a folded model, folded out after."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from edgeopt.compress.train_bn import bare_convs, batchnorm_for_training


class Folded(nn.Module):
    """What an ONNX export gives back: convs with biases, no BatchNorm, a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = y + torch.relu(self.b(y))
        return self.head(y.mean(dim=(2, 3)))


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g) * 3 + 1


def test_identity_inside_trains_with_bn_folds_back_to_the_same_layers():
    torch.manual_seed(0)
    gm = fx.symbolic_trace(Folded().eval())
    x = _data()
    names = [n for n, _ in gm.named_modules()]
    before = gm(x)
    with batchnorm_for_training(gm, x) as added:
        assert len(added) == 2
        bns = [m for m in gm.modules() if isinstance(m, nn.BatchNorm2d)]
        assert len(bns) == 2
        torch.testing.assert_close(gm(x), before, atol=1e-5, rtol=1e-5)  # eval: identity
        # Training mode: batch statistics are the population's here, so still ~identity.
        gm.train()
        torch.testing.assert_close(gm(x), before, atol=1e-3, rtol=1e-3)
        # A training step moves BN's affine and its running stats; what leaves is that.
        opt = torch.optim.SGD(gm.parameters(), lr=0.05)
        gm(x).pow(2).mean().backward()
        opt.step()
        gm(x * 0.5)  # updates running stats
        gm.eval()
        inside = gm(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    assert [n for n, _ in gm.named_modules()] == names
    torch.testing.assert_close(gm(x), inside, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(inside, before, atol=1e-3)


def test_a_model_with_its_own_norms_is_left_alone():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3))
    gm = fx.symbolic_trace(net.eval())
    assert bare_convs(gm) == []
    code = gm.code
    with batchnorm_for_training(gm, _data()) as added:
        assert added == [] and gm.code == code
    assert bare_convs(nn.Conv2d(1, 1, 1)) == []  # not an fx graph: nothing to edit
