"""Compression techniques; importing this package registers their handlers."""

from edgeopt.compress import distill, quantize  # noqa: F401
