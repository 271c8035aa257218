"""Weight clustering: k shared values per layer, stored as packed codes + a float table."""

from edgeopt.compress.cluster import reload  # noqa: F401  (lift hooks for exported models)
from edgeopt.compress.cluster.kmeans import ClusterConfig, ClusterInit, cluster_weights, kmeans_1d
from edgeopt.compress.cluster.modules import CLUSTERED_LAYERS, ClusteredConv2d, ClusteredLinear

__all__ = ["CLUSTERED_LAYERS", "ClusterConfig", "ClusterInit", "ClusteredConv2d",
           "ClusteredLinear", "cluster_weights", "kmeans_1d"]
