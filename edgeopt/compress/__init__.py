"""Compression techniques; importing this package registers their handlers."""

from edgeopt.compress import cluster, distill, lowrank, prune, quantize  # noqa: F401
