"""BatchNorm while training a model whose BatchNorms were folded away.

An exported ONNX CNN has every BatchNorm folded into its conv (torch.onnx does so in eval
mode, and paddle2onnx writes Mul/Add that onnxslim folds), so the torch module onnx2torch
gives back has bare Conv2d layers. Fine-tuned after pruning, such a net recovers far less
in the same budget: ResNet on Fashion-MNIST through prune-distill-int8 reached 81.9% from
its ONNX file against 89.4% from the .pt2 of the same weights, because without BN the
shift in activation statistics that the removed channels cause must be learned by the
weights, step by step.

``batchnorm_for_training`` puts a BatchNorm2d after each conv of a BN-free model, set to
the identity at that conv's own output statistics (running mean = bias = channel mean,
running var = var, weight = sqrt(var + eps)), so the function does not change in eval mode
and barely in training mode; after training it folds them back (``fold_conv_bn``), so the
model leaves with the layers and names it came with. A model with any BatchNorm of its
own was designed with its normalisation and is left as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.fx as fx
from torch import nn

from edgeopt.compress.fold_bn import fold_conv_bn

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm,
          nn.InstanceNorm2d)


def bare_convs(model: nn.Module) -> list[fx.Node]:
    """The Conv2d call nodes of an fx model that has no normalisation layer at all."""
    if not isinstance(model, fx.GraphModule):
        return []
    if any(isinstance(m, _NORMS) for m in model.modules()):
        return []
    return [n for n in model.graph.nodes if n.op == "call_module"
            and type(model.get_submodule(n.target)) is nn.Conv2d]


@torch.no_grad()
def _output_stats(model: nn.Module, convs: list[nn.Conv2d], x: torch.Tensor,
                  batch_size: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    sums: dict[int, list] = {}

    def hook(mod, _inp, out):
        o = out.detach().double()
        s = sums.setdefault(id(mod), [0.0, 0.0, 0])
        s[0] = s[0] + o.sum(dim=(0, 2, 3))
        s[1] = s[1] + (o * o).sum(dim=(0, 2, 3))
        s[2] += o.numel() // o.shape[1]

    handles = [c.register_forward_hook(hook) for c in convs]
    was = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    out = {}
    for key, (s, sq, n) in sums.items():
        mean = s / n
        out[key] = (mean.float(), (sq / n - mean * mean).clamp_min(0).float())
    return out


@contextlib.contextmanager
def batchnorm_for_training(model: nn.Module, x: torch.Tensor, *, samples: int = 1024,
                           batch_size: int = 256) -> Iterator[list[str]]:
    """Within the block, ``model`` (an fx GraphModule, changed in place) has a BatchNorm2d
    after each of its bare convs; yields their names. On exit they are folded back."""
    inserted = insert_batchnorm(model, x, samples=samples, batch_size=batch_size)
    try:
        yield [t for t, _ in inserted]
    finally:
        fold_back(model, inserted)


def insert_batchnorm(model: nn.Module, x: torch.Tensor, *, samples: int = 1024,
                     batch_size: int = 256, unit_weights: bool = False
                     ) -> list[tuple[str, str]]:
    """Put the BatchNorms in (see the module docstring); returns (bn, conv) targets for
    ``fold_back``, which works on any deep copy of ``model`` too. With ``unit_weights``
    each conv is rescaled to unit output std and the BN carries the scale
    (``_unit_conv``), as in a net trained with its BatchNorms."""
    nodes = bare_convs(model)
    if not nodes or len(x) == 0:
        return []
    gm: fx.GraphModule = model  # type: ignore[assignment]
    convs = [gm.get_submodule(n.target) for n in nodes]
    stats = _output_stats(gm, convs, x[:samples], batch_size)
    taken = {name for name, _ in gm.named_modules()}
    inserted: list[tuple[str, str]] = []  # (bn target, conv target)
    for node, conv in zip(nodes, convs):
        if id(conv) not in stats:  # not on the path the inputs take
            continue
        mean, var = stats[id(conv)]
        bn = nn.BatchNorm2d(conv.out_channels).to(conv.weight.device)
        bn.train(gm.training)  # a new module trains; in an eval model it must not
        with torch.no_grad():
            if unit_weights:
                _unit_conv(conv, bn, mean, var)
            else:
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                bn.weight.copy_(torch.sqrt(var + bn.eps))
                bn.bias.copy_(mean)
        target = f"{node.target}_train_bn"
        while target in taken:
            target += "_"
        taken.add(target)
        gm.add_submodule(target, bn)
        with gm.graph.inserting_after(node):
            bn_node = gm.graph.call_module(target, (node,))
        node.replace_all_uses_with(bn_node, delete_user_cb=lambda user, new=bn_node: user is not new)
        inserted.append((target, str(node.target)))
    gm.graph.lint()
    gm.recompile()
    return inserted


def _unit_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d, mean: torch.Tensor,
               var: torch.Tensor) -> None:
    """Divide each output channel of ``conv`` by its output std and give the scale to
    ``bn``'s weight, so the pair is the same function and the conv's channels have unit
    output std, as a conv trained before a BatchNorm has up to its own arbitrary scale."""
    std = torch.sqrt(var + bn.eps)
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    conv.weight.div_(std.reshape(shape))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
    conv.bias = nn.Parameter((bias - mean) / std)
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0)
    bn.weight.copy_(std * (1.0 + bn.eps) ** 0.5)
    bn.bias.copy_(mean)


def fold_back(gm: fx.GraphModule, inserted: list[tuple[str, str]]) -> None:
    if not inserted:
        return  # also for a model that is no GraphModule (nothing was put in)
    by_target = {str(n.target): n for n in gm.graph.nodes if n.op == "call_module"}
    for target, conv_target in inserted:
        node = by_target.get(target)
        if node is None:
            continue
        bn = gm.get_submodule(target)
        fold_conv_bn(gm.get_submodule(conv_target), bn)
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
        gm.delete_submodule(target)
    gm.graph.lint()
    gm.recompile()
