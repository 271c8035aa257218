"""Quantization: specs, observers, simulated-quantization modules, PTQ."""

from edgeopt.compress.quantize import (  # noqa: F401  (register handlers and lift hooks)
    equalize,
    mixed,
    ptq,
    qat,
    reload,
    tensor_split,
)
from edgeopt.compress.quantize.spec import Int8Config, Observer, QuantConfig, QuantSpec

__all__ = ["Int8Config", "Observer", "QuantConfig", "QuantSpec"]
