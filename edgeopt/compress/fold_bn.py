"""Batch-norm folding: merge an inference-mode BatchNorm into the conv before it.

Done before quantization so the weights that get quantized are the ones the
deployed model multiplies with (ORT would fold it anyway, after our ranges
were chosen on the unfolded weights).
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` into ``conv`` in place."""
    with torch.no_grad():
        std = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
        factor = gamma / std
        conv.weight.mul_(factor.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(std)
        new_bias = (bias - bn.running_mean) * factor + beta
        conv.bias = nn.Parameter(new_bias)


def fold_batchnorm(gm: fx.GraphModule) -> list[str]:
    """Fold every Conv2d -> BatchNorm2d pair whose conv output feeds only the BN.

    Returns the names of the folded BN layers.
    """
    folded = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), nn.BatchNorm2d):
            continue
        prev = node.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1):
            continue
        conv = gm.get_submodule(prev.target)
        if type(conv) is not nn.Conv2d:
            continue
        fold_conv_bn(conv, gm.get_submodule(node.target))
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        gm.delete_submodule(node.target)
        folded.append(str(node.target))
    gm.graph.lint()
    gm.recompile()
    return folded
