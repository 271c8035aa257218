"""Low-rank factorisation: SVD for Linear and 1x1 convs, Tucker-2 or CP for k x k convs.

Importing this package registers the ``LowRankConfig`` handler.
"""

from edgeopt.compress.lowrank.config import LowRankConfig, factorise
from edgeopt.compress.lowrank.ranks import ConvMethod

__all__ = ["ConvMethod", "LowRankConfig", "factorise"]
