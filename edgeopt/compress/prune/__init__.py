"""Pruning: structured (whole channels, Torch-Pruning) and unstructured (magnitude sparsity).

Importing this package registers both handlers: ``StructuredPruneConfig`` (recipe
step ``prune``) and ``MagnitudePruneConfig`` (recipe step ``sparsify``).
"""

from edgeopt.compress.prune.structured import Importance, StructuredPruneConfig
from edgeopt.compress.prune.unstructured import (
    MagnitudePruneConfig,
    Scope,
    compressed_size,
    polynomial_sparsity,
)

__all__ = ["Importance", "MagnitudePruneConfig", "Scope", "StructuredPruneConfig",
           "compressed_size", "polynomial_sparsity"]
