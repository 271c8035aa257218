"""The stored forms edgeopt's own layers report are exactly what those layers compute with."""

import torch
from torch import nn

from edgeopt import QuantSpec
from edgeopt.compress.cluster.modules import clustered
from edgeopt.compress.quantize.fake_quant import ActQuant, Mode, QuantConv2d
from edgeopt.core.forms import CodebookWeight, IntWeight, stored_activation, stored_weight


def test_a_quantized_conv_reports_its_integers_grid_and_int32_bias():
    torch.manual_seed(0)
    layer = QuantConv2d.from_float(nn.Conv2d(3, 4, 3), QuantSpec(bits=4, per_channel=True))
    layer.bias_scale = torch.full((4,), 1e-3)
    form = stored_weight(layer)
    assert isinstance(form, IntWeight) and form.per_channel and form.bits == 4
    shape = (-1, 1, 1, 1)
    rebuilt = (form.q - form.zero_point.reshape(shape)) * form.scale.reshape(shape)
    w, b = layer._effective()
    torch.testing.assert_close(rebuilt, w.detach())
    torch.testing.assert_close(form.bias_q * form.bias_scale, b.detach())
    assert set(form.q.unique().tolist()) <= set(form.levels)
    layer.quant_enabled = False
    assert stored_weight(layer) is None  # it computes with its float weight then


def test_a_clustered_layer_reports_its_codebook():
    torch.manual_seed(0)
    layer = clustered(nn.Linear(6, 5), torch.tensor([0.3, -0.2, 0.0]),
                      torch.randint(0, 3, (5, 6)))
    form = stored_weight(layer)
    assert isinstance(form, CodebookWeight)
    assert torch.all(form.table[1:] > form.table[:-1])  # ascending
    torch.testing.assert_close(form.decoded(), layer.clustered_weight().detach())


def test_an_activation_quantizer_is_active_only_when_quantizing():
    q = ActQuant(QuantSpec(bits=8, symmetric=False))
    q.set_range(-1.0, 3.0)
    assert not stored_activation(q).active
    q.mode = Mode.QUANT
    form = stored_activation(q)
    assert form.active and (form.qmin, form.qmax) == (0, 255) and not form.signed
    x = torch.linspace(-2, 4, 50)
    fq = (torch.clamp(torch.round(x / form.scale) + form.zero_point, form.qmin, form.qmax)
          - form.zero_point) * form.scale
    torch.testing.assert_close(fq, q(x))


def test_a_plain_layer_has_no_form():
    assert stored_weight(nn.Conv2d(1, 1, 1)) is None
    assert stored_activation(nn.ReLU()) is None
