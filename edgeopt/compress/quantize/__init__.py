"""Quantization: specs, observers, simulated-quantization modules, PTQ."""

from edgeopt.compress.quantize import ptq, reload  # noqa: F401  (register handler and lift hooks)
from edgeopt.compress.quantize.spec import Int8Config, Observer, QuantConfig, QuantSpec

__all__ = ["Int8Config", "Observer", "QuantConfig", "QuantSpec"]
