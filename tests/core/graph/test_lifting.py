"""core/graph: export with a dynamic batch, then ``lift`` to real modules named by path.

test_canonical.py covers lifting the plain TinyCNN through canonical_copy; these cover the
layer shapes lift rebuilds (groups, stride, dilation, no bias), views, batch ranges and the
extension hooks, on ``export_program`` and ``lift`` directly.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeopt.core.errors import ExportError
from edgeopt.core.graph import (
    DEFAULT_BATCH_RANGE,
    POST_LIFT,
    batch_range,
    export_program,
    layer_name,
    leaf_modules,
    lift,
)

aten = torch.ops.aten


class Odd(nn.Module):
    """Layers whose attributes a careless rebuild gets wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 8, 3, stride=2, padding=1, bias=False)
        self.block = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4))
        self.fc = nn.Linear(8 * 4 * 4, 6, bias=False)

    def forward(self, x):
        return self.fc(torch.flatten(self.block(self.stem(x)), 1))


class Pooled(nn.Module):
    """A view that is not a flatten: (N, C, H*W) then a mean over the positions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.view(y.shape[0], 4, -1).mean(2))


def _odd() -> Odd:
    torch.manual_seed(0)
    model = Odd()
    bn = model.block[0]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _targets(gm, target):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is target]


def test_lift_rebuilds_each_layer_with_its_attributes():
    model = _odd()
    gm = lift(export_program(model, torch.zeros(1, 2, 8, 8)))
    calls = {str(n.target): type(gm.get_submodule(n.target))
             for n in gm.graph.nodes if n.op == "call_module"}
    assert calls == {"stem": nn.Conv2d, "block.0": nn.BatchNorm2d, "block.2": nn.Conv2d,
                     "fc": nn.Linear}
    stem, conv, fc = gm.get_submodule("stem"), gm.get_submodule("block.2"), gm.fc
    assert (stem.stride, stem.padding, stem.bias) == ((2, 2), (1, 1), None)
    assert (conv.groups, conv.dilation, conv.padding) == (4, (2, 2), (2, 2))
    assert conv.weight.shape == (8, 2, 3, 3) and conv.bias is not None
    assert fc.bias is None and (fc.in_features, fc.out_features) == (128, 6)
    assert [name for name, _ in leaf_modules(gm)] == ["stem", "block.2", "fc"]
    # Copies, not the user's tensors: techniques edit the lifted weights in place.
    assert fc.weight.data_ptr() != model.fc.weight.data_ptr()
    torch.testing.assert_close(fc.weight, model.fc.weight)
    for batch in (1, 5):
        x = torch.randn(batch, 2, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_flatten_stays_a_flatten_and_other_views_become_reshapes():
    gm = lift(export_program(_odd(), torch.zeros(1, 2, 8, 8)))
    assert len(_targets(gm, aten.flatten.using_ints)) == 1
    assert not _targets(gm, aten.view.default)
    pooled = Pooled().eval()
    gm = lift(export_program(pooled, torch.zeros(1, 1, 6, 6)))
    assert len(_targets(gm, aten.reshape.default)) == 1 and not _targets(gm, aten.view.default)
    # A channels-last input, which a view would refuse.
    x = torch.randn(3, 1, 6, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), pooled(x), rtol=1e-5, atol=1e-5)


def test_layer_names_are_the_module_paths():
    gm = lift(export_program(_odd(), torch.zeros(1, 2, 8, 8)))
    names = [layer_name(n) for n in gm.graph.nodes if n.op == "call_module"]
    assert names == ["stem", "block.0", "block.2", "fc"]


def test_batch_ranges_of_modules_and_programs():
    model = _odd()
    assert batch_range(model) is None  # a plain module takes any batch
    ep = export_program(model, torch.zeros(1, 2, 8, 8))
    assert batch_range(ep) == (DEFAULT_BATCH_RANGE[0], DEFAULT_BATCH_RANGE[1])
    dim = torch.export.Dim("b", min=2, max=64)
    bounded = torch.export.export(model, (torch.zeros(4, 2, 8, 8),),
                                  dynamic_shapes=({0: dim},), strict=False)
    assert batch_range(bounded) == (2, 64)
    # Re-exported within its own range: a wider one would violate its constraints.
    assert batch_range(export_program(bounded.module(), torch.zeros(1, 2, 8, 8),
                                      batches=(2, 64))) == (2, 64)
    assert lift(bounded).meta["batch_range"] == (2, 64)


def test_a_static_batch_program_is_freed_only_when_it_computes_per_sample():
    static = torch.export.export(_odd(), (torch.zeros(3, 2, 8, 8),), strict=False)
    assert batch_range(static) == (3, 3)
    # The batch sat only in the flatten, which lift made general: any batch now works.
    gm = lift(static)
    assert gm.meta["batch_range"] == DEFAULT_BATCH_RANGE
    assert gm(torch.randn(7, 2, 8, 8)).shape == (7, 6)

    class Mixes(nn.Module):  # samples interact: the batch must stay 3
        def forward(self, x):
            return x - x.mean(0, keepdim=True)

    gm = lift(torch.export.export(Mixes(), (torch.zeros(3, 2),), strict=False))
    assert gm.meta["batch_range"] == (3, 3)


def test_post_lift_hooks_see_the_finished_module():
    seen = []
    POST_LIFT.append(seen.append)  # filled in place, as quantize/reload.py does
    try:
        gm = lift(export_program(_odd(), torch.zeros(1, 2, 8, 8)))
    finally:
        POST_LIFT.remove(seen.append)
    assert seen == [gm]


def test_a_model_torch_export_cannot_trace_is_one_export_error_line():
    class DataDependent(nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # control flow on values
                return x
            return -x

    with pytest.raises(ExportError, match=r"^torch.export cannot trace the model: ") as err:
        export_program(DataDependent(), torch.ones(1, 2))
    assert "\n" not in str(err.value)
