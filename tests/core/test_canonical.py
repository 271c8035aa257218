import numpy as np
import pytest
import torch
from torch import nn

from edgeopt.core.canonical import canonical_copy, is_canonical
from edgeopt.core.errors import DataError, ModelLoadError
from edgeopt.core.graph import leaf_modules

INPUT_SHAPE = [1, 8, 8]


@pytest.fixture
def gm(tiny_cnn):
    return canonical_copy(tiny_cnn, torch.zeros(2, *INPUT_SHAPE))


def test_lift_recovers_weight_layers_by_qualified_name(gm, tiny_cnn):
    calls = {str(n.target): type(gm.get_submodule(n.target))
             for n in gm.graph.nodes if n.op == "call_module"}
    assert calls == {"features.0": nn.Conv2d, "features.1": nn.BatchNorm2d, "head": nn.Linear}
    assert [name for name, _ in leaf_modules(gm)] == ["features.0", "head"]
    conv = gm.get_submodule("features.0")
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (1, 4, (3, 3),
                                                                                     (1, 1))
    torch.testing.assert_close(conv.weight, tiny_cnn.features[0].weight)
    torch.testing.assert_close(gm.get_submodule("features.1").running_var,
                               tiny_cnn.features[1].running_var)
    assert is_canonical(gm) and gm.meta["input_shape"] == INPUT_SHAPE


@pytest.mark.parametrize("batch", [1, 7])
def test_outputs_match_at_any_batch(gm, tiny_cnn, batch):
    x = torch.randn(batch, *INPUT_SHAPE)
    with torch.no_grad():
        np.testing.assert_allclose(gm(x).numpy(), tiny_cnn(x).numpy(), atol=1e-5)


def test_user_model_is_not_modified(tiny_cnn):
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    gm = canonical_copy(tiny_cnn, torch.zeros(2, *INPUT_SHAPE))
    with torch.no_grad():
        gm.get_submodule("head").weight.zero_()
    for k, v in tiny_cnn.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_canonical_copy_of_canonical_is_a_deep_copy(gm):
    again = canonical_copy(gm, None)
    assert again is not gm and is_canonical(again)
    ptr = again.get_submodule("head").weight.data_ptr()
    assert ptr != gm.get_submodule("head").weight.data_ptr()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_name_the_parameter(tiny_cnn, value):
    with torch.no_grad():
        tiny_cnn.head.weight[0, 3] = value
        tiny_cnn.head.weight[1, 2] = value
    with pytest.raises(ModelLoadError, match=r"head\.weight has 2 NaN/Inf"):
        canonical_copy(tiny_cnn, torch.zeros(2, *INPUT_SHAPE))


def test_non_finite_buffer_is_refused(tiny_cnn):
    with torch.no_grad():
        tiny_cnn.features[1].running_var[0] = float("nan")
    with pytest.raises(ModelLoadError, match=r"features\.1\.running_var"):
        canonical_copy(tiny_cnn, torch.zeros(2, *INPUT_SHAPE))


def test_sample_shape_that_does_not_fit_is_a_data_error(tiny_cnn):
    with pytest.raises(DataError, match=r"\(1, 10, 10\)") as exc:
        canonical_copy(tiny_cnn, torch.zeros(2, 1, 10, 10))
    assert "\n" not in str(exc.value)


def test_no_example_is_a_data_error(tiny_cnn):
    with pytest.raises(DataError):
        canonical_copy(tiny_cnn, None)
