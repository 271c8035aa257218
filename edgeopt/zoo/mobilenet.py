"""MobileNetV2-style CNN (inverted residuals, depthwise convs) for 28x28 images."""

from __future__ import annotations

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s). Two stride-2 stages
# take 28x28 down to 7x7, the same final resolution as resnet_small.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 3, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of 8 (as MobileNetV2 does) without losing >10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn_act(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(cin, hidden, 1))
        layers.append(conv_bn_act(hidden, hidden, 3, stride, groups=hidden))
        # The projection is linear (no activation): ReLU on the narrow output loses information.
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # use_residual is fixed at construction, so torch.export sees no data-dependent branch.
        if self.use_residual:
            return x + self.block(x)
        return self.block(x)


class MobileNetV2Small(nn.Module):
    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0
    ) -> None:
        super().__init__()
        cin = make_divisible(32 * width_mult)
        last = make_divisible(256 * max(1.0, width_mult))
        layers: list[nn.Module] = [conv_bn_act(in_channels, cin, 3)]
        for t, c, n, s in SETTINGS:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(conv_bn_act(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenetv2_small(
    num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0
) -> MobileNetV2Small:
    return MobileNetV2Small(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)
