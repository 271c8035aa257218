"""Both backends lower what a layer stores (core.forms), not the technique's module class:
a layer class no backend has heard of is lowered by both as soon as it reports its form."""

import numpy as np
import onnx
import torch
from torch import nn

from edgeopt.compile.api import prepare
from edgeopt.compile.backends.onnxruntime.lower import export_onnx
from edgeopt.compile.backends.onnxruntime.runtime import make_session
from edgeopt.compile.backends.tvm.lower import INT_WEIGHT, DequantConv2d, lower_fake_quant
from edgeopt.core.forms import CodebookWeight, IntWeight
from edgeopt.core.graph import leaf_modules

SHAPE = [1, 8, 8]


class RoundedConv(nn.Conv2d):
    """A technique this test invents: weights on a per-tensor grid of 15 levels."""

    def stored_weight(self) -> IntWeight:
        w = self.weight.detach()
        scale = w.abs().max() / 7
        q = torch.clamp(torch.round(w / scale), -7, 7).to(torch.int32)
        return IntWeight(q=q, scale=scale.reshape(()), zero_point=torch.zeros(()),
                         levels=tuple(range(-7, 8)), bits=4, uniform=True, signed=True,
                         bias=None if self.bias is None else self.bias.detach())

    def forward(self, x):
        form = self.stored_weight()
        return self._conv_forward(x, form.q * form.scale, self.bias)


class TwoValueLinear(nn.Linear):
    """Another: every weight is one of two values."""

    def stored_weight(self) -> CodebookWeight:
        table = torch.tensor([-0.1, 0.1])
        return CodebookWeight(table=table, codes=(self.weight.detach() > 0).long())

    def forward(self, x):
        return nn.functional.linear(x, self.stored_weight().decoded(), self.bias)


def _swap(gm, name, new):
    with torch.no_grad():
        new.load_state_dict(gm.get_submodule(name).state_dict())
    parent, _, leaf = name.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, new)


def _invented(tiny_cnn):
    gm, _ = prepare(tiny_cnn, SHAPE)
    convs = [n for n, _ in leaf_modules(gm, (nn.Conv2d,))]
    linears = [n for n, _ in leaf_modules(gm, (nn.Linear,))]
    c, lin = gm.get_submodule(convs[0]), gm.get_submodule(linears[-1])
    _swap(gm, convs[0], RoundedConv(c.in_channels, c.out_channels, c.kernel_size,
                                    stride=c.stride, padding=c.padding, groups=c.groups,
                                    bias=c.bias is not None))
    _swap(gm, linears[-1], TwoValueLinear(lin.in_features, lin.out_features,
                                          bias=lin.bias is not None))
    return gm.eval(), convs[0]


def test_onnx_stores_the_forms_and_computes_like_the_layers(tiny_cnn):
    gm, _ = _invented(tiny_cnn)
    model = export_onnx(gm, SHAPE)
    ops = [n.op_type for n in model.graph.node]
    assert "DequantizeLinear" in ops  # the integer grid, not float weights
    int8 = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8, "the 15-level weights are stored as integers"
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = gm(x).numpy()
    got = make_session(model.SerializeToString()).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_tvm_lowering_keeps_the_integers_and_computes_like_the_layers(tiny_cnn):
    gm, conv = _invented(tiny_cnn)
    lowered, has_int = lower_fake_quant(gm)
    assert has_int and isinstance(lowered.get_submodule(conv), DequantConv2d)
    assert getattr(lowered.get_submodule(conv), INT_WEIGHT).dtype == torch.int8
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(lowered(x), gm(x), rtol=1e-5, atol=1e-6)
