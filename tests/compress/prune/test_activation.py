"""Activation importance: the same network ranks the same with its batch norms folded
into the convs (an ONNX export) or not, where the L2 weight ranking does not."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

import edgeopt.compress.prune  # noqa: F401  (registers the handlers)
from edgeopt.compress import apply
from edgeopt.compress.prune import StructuredPruneConfig
from edgeopt.compress.prune.activation import _in_weight_norms
from edgeopt.core.data import Preprocess, load_dataset
from edgeopt.core.errors import DataError
from edgeopt.core.train import TrainData
from edgeopt.zoo.mobilenet import mobilenetv2_small

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return TrainData(x=Preprocess()(ds.train.x), y=ds.train.y)


@pytest.fixture(scope="module")
def mbv2(digits, train_tiny):
    """MobileNetV2 (expand -> depthwise -> project, residuals) trained briefly, so its
    batch norms hold real statistics and folding them rescales every conv's channels."""
    torch.manual_seed(0)
    return train_tiny(mobilenetv2_small(width_mult=0.5), digits.x, digits.y, epochs=2)


def _kept(model, digits, importance):
    cfg = StructuredPruneConfig(ratio=0.4, global_pruning=True, importance=importance)
    pruned = apply(model, cfg, data=digits, progress=False)
    return {n: b for n, (a, b) in pruned.meta["edgeopt"]["prune"]["channels"].items()}


def test_folding_batch_norm_leaves_the_ranking_unchanged(mbv2, digits):
    folded = fuse(torch.fx.symbolic_trace(mbv2))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = digits.x[:8]
    torch.testing.assert_close(folded(x), mbv2(x), atol=1e-4, rtol=1e-4)

    act, act_folded = _kept(mbv2, digits, "activation"), _kept(folded, digits, "activation")
    l2, l2_folded = _kept(mbv2, digits, "l2"), _kept(folded, digits, "l2")
    # Same layer names on both sides (fuse keeps the convs' names).
    assert act.keys() == act_folded.keys() == l2.keys()
    cut = sum(a - b for a, b in zip(_kept_before(mbv2), act.values(), strict=True))
    assert cut > 0.2 * sum(_kept_before(mbv2))  # a real cut, spread by the global ranking
    assert act == act_folded
    # The weight ranking moves: folding rescales each channel by gamma / sigma.
    moved = sum(abs(l2[n] - l2_folded[n]) for n in l2)
    assert moved >= 16, (l2, l2_folded)


def _kept_before(model):
    return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def test_unit_rows_make_reader_norms_blind_to_a_folded_scale():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 4, 3, groups=2)
    scaled = nn.Conv2d(6, 4, 3, groups=2)
    s = torch.tensor([0.1, 3.0, 7.0, 0.5]).reshape(-1, 1, 1, 1)
    scaled.weight.data = conv.weight.data * s
    torch.testing.assert_close(_in_weight_norms(conv), _in_weight_norms(scaled))
    assert _in_weight_norms(conv).shape == (6,)
    # Group-major: input channels 0-2 feed outputs 0-1, channels 3-5 feed outputs 2-3.
    w = conv.weight.data
    rows = w / w.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    expect = torch.cat([rows[:2].pow(2).sum((0, 2, 3)), rows[2:].pow(2).sum((0, 2, 3))]).sqrt()
    torch.testing.assert_close(_in_weight_norms(conv), expect)


def test_activation_importance_needs_data():
    cfg = StructuredPruneConfig(ratio=0.3, importance="activation", input_shape=(1, 8, 8))
    with pytest.raises(DataError, match="activation importance is measured on data"):
        apply(mobilenetv2_small(), cfg, data=None, progress=False)
