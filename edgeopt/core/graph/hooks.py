"""Extension points, so a compression package can teach ``lift`` to recognise the ops
its exported models contain (quantize/reload.py) without core importing it.

Each is filled in place (``PARAM_WRAPPERS[op] = True``): rebinding one would leave
``lift`` reading the old object.
"""

from __future__ import annotations

# op -> True for an op applied to a stored weight/bias (e.g. fake-quant of a weight);
# the layer is lifted from the stored tensor.
PARAM_WRAPPERS: dict = {}
# fn(module, weight_wrapper, bias_wrapper, src) -> module, called when a lifted layer's
# weight or bias was wrapped.
LAYER_FINISHERS: list = []
# op -> fn(node, src) -> nn.Module | None, for standalone ops that become modules
# (e.g. activation fake-quant).
NODE_LIFTERS: dict = {}
# fn(gm) run on the finished canonical module.
POST_LIFT: list = []
