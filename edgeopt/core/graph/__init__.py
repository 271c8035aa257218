"""The canonical model form every technique works on.

Whatever the user hands us (an nn.Module, a torch.export program, TorchScript,
ONNX) is traced once with ``torch.export`` into aten operators (``export``).
``lift`` then turns the weight-carrying operators back into real ``nn.Conv2d`` /
``nn.Linear`` / ``nn.BatchNorm2d`` modules (``rebuild``) named by their qualified
path ("layer1.0.conv1"), so compression techniques can swap modules and the
per-layer policy can match names (``layers``), while every other operator stays
an aten call the exporter maps one to one. Compression packages extend ``lift``
through ``hooks``.
"""

from edgeopt.core.graph.export import DEFAULT_BATCH_RANGE, batch_range, eval_mode, export_program
from edgeopt.core.graph.hooks import LAYER_FINISHERS, NODE_LIFTERS, PARAM_WRAPPERS, POST_LIFT
from edgeopt.core.graph.layers import layer_name, leaf_modules
from edgeopt.core.graph.lifting import lift
from edgeopt.core.graph.rebuild import BN_OPS, CONV_OPS, stored_tensor

__all__ = [
    "BN_OPS",
    "CONV_OPS",
    "DEFAULT_BATCH_RANGE",
    "LAYER_FINISHERS",
    "NODE_LIFTERS",
    "PARAM_WRAPPERS",
    "POST_LIFT",
    "batch_range",
    "eval_mode",
    "export_program",
    "layer_name",
    "leaf_modules",
    "lift",
    "stored_tensor",
]
