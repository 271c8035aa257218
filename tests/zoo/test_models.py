import pytest
import torch
from torch import nn

from edgeopt.core.errors import ConfigError
from edgeopt.zoo import build, mobilenetv2_small, resnet_small


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "factory, low, high",
    [(resnet_small, 250_000, 350_000), (mobilenetv2_small, 150_000, 250_000)],
)
def test_output_shape_and_size(factory, low, high):
    model = factory().eval()
    assert low <= n_params(model) <= high
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    rgb = factory(num_classes=5, in_channels=3).eval()
    assert rgb(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert rgb(torch.randn(2, 3, 8, 8)).shape == (2, 5)  # digits-sized input still works


def test_resnet_structure():
    model = resnet_small(width=16)
    assert isinstance(model.layer1.shortcut, nn.Identity)
    projection = model.layer2.shortcut[0]
    assert projection.kernel_size == (1, 1) and projection.stride == (2, 2)
    assert projection.out_channels == 32 and model.fc.in_features == 64
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 7 and not any(r.inplace for r in relus)


def test_mobilenet_structure():
    model = mobilenetv2_small()
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 8
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    residual = [m for m in model.modules() if getattr(m, "use_residual", False)]
    assert len(residual) == 4  # the repeats after each stage's first block
    assert model.classifier.in_features == 256


@pytest.mark.parametrize("arch", ["resnet_small", "mobilenetv2_small"])
def test_torch_export(arch):
    model = build(arch, width_mult=0.5).eval()
    x = torch.randn(2, 1, 28, 28)
    exported = torch.export.export(model, (x,))
    conv_nodes = [
        n for n in exported.graph.nodes if n.op == "call_function" and "conv" in str(n.target)
    ]
    assert len(conv_nodes) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    torch.testing.assert_close(exported.module()(x), model(x))


def test_build_width_and_errors():
    assert n_params(build("resnet_small", width_mult=0.5)) < n_params(build("resnet_small")) / 3
    assert n_params(build("mobilenetv2_small", width_mult=0.5)) < n_params(
        build("mobilenetv2_small")
    )
    with pytest.raises(ConfigError, match="unknown architecture 'vgg'"):
        build("vgg")
