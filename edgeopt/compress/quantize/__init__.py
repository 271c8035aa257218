"""Quantization: specs, observers, simulated-quantization modules, PTQ."""

from edgeopt.compress.quantize import ptq  # noqa: F401  (registers the handler)
from edgeopt.compress.quantize.spec import Int8Config, Observer, QuantConfig, QuantSpec

__all__ = ["Int8Config", "Observer", "QuantConfig", "QuantSpec"]
