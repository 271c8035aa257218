"""Reference architectures, written by hand, and their cached trained weights."""

from __future__ import annotations

from torch import nn

from edgeopt.core.errors import ConfigError
from edgeopt.zoo.mobilenet import mobilenetv2_small
from edgeopt.zoo.resnet import resnet_small

ARCHS = ("resnet_small", "mobilenetv2_small")


def build(
    arch: str, *, num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0
) -> nn.Module:
    """One entry point for every architecture; ``width_mult`` scales channels for both."""
    if arch == "resnet_small":
        return resnet_small(num_classes, in_channels, width=max(1, round(32 * width_mult)))
    if arch == "mobilenetv2_small":
        return mobilenetv2_small(num_classes, in_channels, width_mult=width_mult)
    raise ConfigError(f"unknown architecture {arch!r} (valid: {', '.join(ARCHS)})")


__all__ = ["ARCHS", "build", "mobilenetv2_small", "resnet_small"]
