"""Lift hooks: an exported clustered model (torch.export, ``.pt2``) becomes clustered again.

A clustered layer traces to ``conv2d(x, edgeopt::clustered_weight(weight, centroids,
codes), bias)``. Registered as a weight wrapper, the op lets ``core.graph.lift``
rebuild the conv/linear from the stored ``weight``; the finisher below then swaps
in a ``ClusteredConv2d``/``ClusteredLinear`` with the stored centroids and codes, so
compiling a saved model still writes packed codes.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from edgeopt.compress.cluster.modules import CLUSTERED_LAYERS, clustered
from edgeopt.core import graph

CLUSTERED_WEIGHT = torch.ops.edgeopt.clustered_weight.default


def _finish_layer(module, w_wrap, b_wrap, src):
    if w_wrap is None or w_wrap.target is not CLUSTERED_WEIGHT:
        return module
    _, centroids, codes = w_wrap.args
    return clustered(module, graph.stored_tensor(centroids, src), graph.stored_tensor(codes, src))


def _record(gm: fx.GraphModule) -> None:
    layers = {name: m.clusters for name, m in graph.leaf_modules(gm)
              if isinstance(m, CLUSTERED_LAYERS)}
    if not layers:
        return
    meta = gm.meta.setdefault("edgeopt", {})
    meta.setdefault("precision", {name: "fp32" for name, _ in graph.leaf_modules(gm)})
    meta.setdefault("cluster", {"layers": {name: {"clusters": k} for name, k in layers.items()},
                                "loaded": True})


graph.PARAM_WRAPPERS[CLUSTERED_WEIGHT] = True
graph.LAYER_FINISHERS.append(_finish_layer)
graph.POST_LIFT.append(_record)
