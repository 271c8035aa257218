"""Where activation quantizers go.

The placement mirrors what ONNX Runtime fuses into integer kernels, so the
simulated model is the model that will run:

* the graph input and the output of every compute op (conv, linear, add, mul,
  concat, average pooling, activations) get their own quantizer;
* a conv/linear/add whose only consumer is ReLU/ReLU6 is quantized after the
  activation instead (ORT folds the activation into the requantization);
* pass-through ops (max-pool, flatten, reshape, dropout) reuse their input's
  grid, which is exact and lets ORT run them on integers;
* the model's output stays float (logits are not requantized);
* any quantized conv/linear whose input is still float gets a quantizer on
  that edge.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.fx as fx
from torch import nn

from edgeopt.compress.quantize.fake_quant import QUANT_LAYERS, ActQuant
from edgeopt.compress.quantize.spec import QuantSpec
from edgeopt.core.graph import layer_name

aten = torch.ops.aten

FUSED_ACTIVATIONS = {aten.relu.default, aten.hardtanh.default, aten.relu6.default}
COMPUTE_OPS = {
    aten.add.Tensor, aten.mul.Tensor, aten.cat.default, aten.adaptive_avg_pool2d.default,
    aten.avg_pool2d.default, aten.mean.dim, aten.relu.default, aten.hardtanh.default,
    aten.relu6.default,
    aten.sigmoid.default, aten.hardswish.default, aten.hardsigmoid.default, aten.silu.default,
    aten.tanh.default,
}
PASS_THROUGH_OPS = {
    aten.max_pool2d.default, aten.flatten.using_ints, aten.view.default, aten.reshape.default,
    aten._unsafe_view.default, aten.dropout.default, aten.clone.default, aten.squeeze.dim,
    aten.unsqueeze.default, aten.permute.default, aten.transpose.int, aten.alias.default,
}
QUANT_CONTAINER = "act_quant"


def _is_module(gm: fx.GraphModule, node: fx.Node, types) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), types)


def insert_act_quantizers(
    gm: fx.GraphModule, act_spec_for: Callable[[str], QuantSpec | None]
) -> dict[str, ActQuant]:
    """Insert ``ActQuant`` modules into ``gm`` in place; returns them by name.

    ``act_spec_for(layer)`` gives the activation spec for the tensor a layer
    produces, or None where that layer is left float.
    """
    if not hasattr(gm, QUANT_CONTAINER):
        gm.add_module(QUANT_CONTAINER, nn.Module())
    container = getattr(gm, QUANT_CONTAINER)
    quantizers: dict[str, ActQuant] = {}
    quantized: dict[fx.Node, fx.Node] = {}  # producer -> its ActQuant node
    output_node = gm.graph.output_node()

    def add_quant(after: fx.Node, spec: QuantSpec, shared_from: str | None = None) -> fx.Node:
        name = f"{after.name}"
        module = ActQuant(spec, shared_from=shared_from)
        container.add_module(name, module)
        target = f"{QUANT_CONTAINER}.{name}"
        quantizers[target] = module
        with gm.graph.inserting_after(after):
            qnode = gm.graph.call_module(target, (after,))
        qnode.meta["layer"] = layer_name(after)
        after.replace_all_uses_with(qnode, delete_user_cb=lambda u: u is not qnode)
        quantized[after] = qnode
        return qnode

    def is_quantized_layer(node: fx.Node) -> bool:
        return _is_module(gm, node, QUANT_LAYERS)

    for node in list(gm.graph.nodes):
        if node.op == "output" or node in quantized:
            continue
        users = list(node.users)
        if users == [output_node]:
            continue  # the model's output stays float
        spec = act_spec_for(layer_name(node))
        if node.op == "placeholder":
            if spec is not None:
                add_quant(node, spec)
            continue
        is_compute = is_quantized_layer(node) or (
            node.op == "call_function" and node.target in COMPUTE_OPS
        )
        if is_compute:
            fused_next = (
                len(users) == 1
                and users[0].op == "call_function"
                and users[0].target in FUSED_ACTIVATIONS
                and node.target not in FUSED_ACTIVATIONS
            )
            if fused_next or spec is None:
                continue
            add_quant(node, spec)
        elif node.op == "call_function" and node.target in PASS_THROUGH_OPS:
            src = node.args[0]
            # Producers were already rewired to read their quantizer's output.
            if src.op == "call_module" and src.target in quantizers:
                add_quant(node, quantizers[src.target].spec, shared_from=src.target)
        elif node.op == "call_function" and node.target is operator.getitem:
            continue

    # Consumer rule: every quantized layer reads a quantized tensor.
    for node in list(gm.graph.nodes):
        if is_quantized_layer(node):
            inp = node.args[0]
            if inp.op == "call_module" and inp.target in quantizers:
                continue
            spec = act_spec_for(layer_name(inp)) or act_spec_for(layer_name(node))
            with gm.graph.inserting_before(node):
                name = f"{node.name}_in"
                module = ActQuant(spec)
                container.add_module(name, module)
                target = f"{QUANT_CONTAINER}.{name}"
                quantizers[target] = module
                qnode = gm.graph.call_module(target, (inp,))
                qnode.meta["layer"] = layer_name(node)
            node.replace_input_with(inp, qnode)

    gm.graph.lint()
    gm.recompile()
    return quantizers
