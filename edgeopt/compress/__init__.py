"""Compression techniques; importing this package registers their handlers."""

from edgeopt.compress import quantize  # noqa: F401
