import numpy as np
import pytest
import torch
from torch import nn

from edgeopt import QuantConfig, QuantSpec, apply
from edgeopt.compile.backends.onnxruntime.lower import export_onnx
from edgeopt.compile.backends.onnxruntime.runtime import make_session
from edgeopt.compress.quantize.tensor_split import SplitConfig, outlier_ratio
from edgeopt.core.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


class SplitNet(nn.Module):
    """conv1 -relu-> conv2 -relu6-> dw -relu-> (y + conv4(y)) -> pool -> fc.

    conv2 can be split (its producer conv1 feeds only it); dw is depthwise and conv4's
    input also feeds a residual add, so those two must be skipped.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.conv4 = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        y = torch.relu(self.conv1(x))
        y = nn.functional.relu6(self.conv2(y))
        y = torch.relu(self.dw(y))
        y = y + self.conv4(y)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def split_net() -> SplitNet:
    torch.manual_seed(0)
    model = SplitNet()
    with torch.no_grad():
        for layer in (model.conv2, model.dw, model.conv4):
            w = layer.weight
            w[3, 0 if layer is model.dw else 5, 1 if w.shape[-1] > 1 else 0, 0] = 8 * w.abs().max()
    return model.eval()


@pytest.fixture
def data():
    return torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def split(data):
    model = split_net()
    return model, apply(model, SplitConfig(expand_ratio=0.5), data=data, progress=False)


def test_function_is_unchanged(split, data):
    model, gm = split
    with torch.no_grad():
        assert float((model(data) - gm(data)).abs().max()) <= 1e-5


def test_planted_outlier_is_split_and_the_range_shrinks(split):
    model, gm = split
    info = gm.meta["edgeopt"]["split_channels"]["split"]
    assert set(info) == {"conv2"}
    conv2 = info["conv2"]
    assert conv2["producer"] == "conv1"
    assert conv2["channels"][0] == 5  # the input channel holding the planted weight
    assert conv2["ratio_after"] < conv2["ratio_before"] / 3
    assert conv2["range_after"] <= conv2["range_before"] / 4 + 1e-6
    added = conv2["channels_added"]
    assert 2 <= added <= 4  # budget: ceil(0.5 * 8)
    assert conv2["in_channels"] == [8, 8 + added]
    assert gm.get_submodule("conv2").in_channels == 8 + added
    assert gm.get_submodule("conv1").out_channels == 8 + added
    assert float(gm.get_submodule("conv2").weight.detach().abs().max()) == pytest.approx(
        conv2["range_after"])
    assert conv2["range_before"] == pytest.approx(float(model.conv2.weight.detach().abs().max()))
    skipped = gm.meta["edgeopt"]["split_channels"]["skipped"]
    assert "depthwise" in skipped["dw"]["reason"]
    assert "2 nodes" in skipped["conv4"]["reason"]


def test_budget_limits_the_channels_added(data):
    gm = apply(split_net(), SplitConfig(expand_ratio=0.1), data=data, progress=False)
    assert gm.meta["edgeopt"]["split_channels"]["split"]["conv2"]["channels_added"] == 1


def test_per_channel_mode_looks_at_the_worst_row(data):
    model = split_net()
    gm = apply(model, SplitConfig(per_channel=True, expand_ratio=0.5), data=data, progress=False)
    conv2 = gm.meta["edgeopt"]["split_channels"]["split"]["conv2"]
    assert conv2["channels"][0] == 5
    assert conv2["ratio_after"] < conv2["ratio_before"]
    assert conv2["ratio_before"] == pytest.approx(outlier_ratio(model.conv2.weight, 99.0, True))


def _int4(layers=None) -> QuantConfig:
    return QuantConfig(weights=QuantSpec(bits=4, per_channel=False), layers=layers or {},
                       calib_size=96, bias_correction=False)


def test_split_quantizes_better_at_int4_per_tensor(split, data):
    model, gm = split
    x = torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x)
        err_plain = float((apply(model, _int4(), data=data, progress=False)(x) - ref).pow(2).mean())
        err_split = float((apply(gm, _int4(), data=data, progress=False)(x) - ref).pow(2).mean())
    # The unsplittable dw and conv4 outliers add about the same error to both.
    assert err_split < 0.8 * err_plain, (err_split, err_plain)


def _layer_output(model, name, x):
    out = []
    handle = model.get_submodule(name).register_forward_hook(lambda _m, _i, o: out.append(o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return out[0]


def test_split_layer_output_error_at_int4(split, data):
    model, gm = split
    cfg = _int4({"conv2": {"bits": 4}, "*": {"skip": True}})
    x = torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    ref = _layer_output(model, "conv2", x)
    errs = [float((_layer_output(apply(m, cfg, data=data, progress=False), "conv2", x) - ref)
                  .pow(2).mean()) for m in (model, gm)]
    assert errs[1] < 0.3 * errs[0], errs


def test_split_model_exports_to_onnx_and_runs(split, data):
    _, gm = split
    sess = make_session(export_onnx(gm, [1, 8, 8]).SerializeToString())
    out = sess.run(None, {"input": data.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, gm(data).numpy(), atol=1e-5, rtol=1e-4)


def test_nothing_to_split_leaves_the_model_alone(data):
    torch.manual_seed(0)
    model = SplitNet().eval()
    gm = apply(model, SplitConfig(threshold=50.0), data=data, progress=False)
    assert gm.meta["edgeopt"]["split_channels"]["split"] == {}
    assert gm.get_submodule("conv2").in_channels == 8


def test_config_validation():
    # The old glob list (layers to consider) reads as the policy, with a warning.
    with pytest.warns(DeprecationWarning, match=r'write `layers: \{"conv\*": \{\}, "\*": \{skip: true\}\}`'):
        old = SplitConfig.from_dict({"per_channel": True, "layers": ["conv*"]})
    assert old.layers == {"conv*": {}, "*": {"skip": True}}
    assert old.policy.resolve(old, "conv2") == old and old.policy.resolve(old, "fc") is None
    own = SplitConfig(layers={"conv2": {"threshold": 3.0}}).policy.resolve(
        SplitConfig(layers={"conv2": {"threshold": 3.0}}), "conv2")
    assert own.threshold == 3.0
    with pytest.raises(ConfigError, match=r"split.layers\['conv2'\]: threshold must be > 1"):
        SplitConfig(layers={"conv2": {"threshold": 0.5}})
    with pytest.raises(ConfigError, match="threshold"):
        SplitConfig(threshold=1.0)
    with pytest.raises(ConfigError, match="expand_ratio"):
        SplitConfig(expand_ratio=0.0)
