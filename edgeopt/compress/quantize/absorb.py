"""High-bias absorption (Nagel et al. 2019, sec. 4.3): the second half of equalize."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.fx as fx
from torch import nn

if TYPE_CHECKING:
    from edgeopt.compress.quantize.equalize import EqualizeConfig, Pair

aten = torch.ops.aten


def _preact_stats(gm: fx.GraphModule, names: list[str], batches) -> dict:
    """Per-channel mean and std of each named layer's output (its pre-activation)."""
    acc: dict[str, list] = {}

    def hook_for(name):
        def hook(_m, _i, out):
            y = out.detach().double()
            y = y.transpose(0, 1).reshape(y.shape[1], -1)
            s = acc.setdefault(name, [0, 0.0, 0.0])
            s[0] += y.shape[1]
            s[1] = s[1] + y.sum(1)
            s[2] = s[2] + (y * y).sum(1)

        return hook

    handles = [gm.get_submodule(n).register_forward_hook(hook_for(n)) for n in names]
    try:
        with torch.no_grad():
            for x in batches:
                gm(x)
    finally:
        for h in handles:
            h.remove()
    stats = {}
    for name, (n, s1, s2) in acc.items():
        mean = s1 / n
        std = (s2 / n - mean * mean).clamp_min(0).sqrt()
        stats[name] = (mean.float(), std.float())
    return stats


def _is_padded(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return False
    return any(k > 1 for k in layer.kernel_size) and any(p != 0 for p in layer.padding)


def absorb_high_biases(gm, pairs: list[Pair], batches, config: EqualizeConfig):
    """Move each equalized pair's almost-always-positive pre-activation part out of
    the first layer's bias into the second's (module docstring of equalize.py)."""
    absorbed, skipped = {}, []
    todo = []
    for p in pairs:
        if p.act is None or p.act.target is not aten.relu.default:
            continue
        if _is_padded(gm.get_submodule(p.second)) and not config.absorb_padded:
            skipped.append({"pair": [p.first, p.second],
                            "reason": "zero-padded consumer (absorb_padded: false)"})
            continue
        todo.append(p)
    # Absorbing A -> B shifts B's input by -c and B's bias by +W_B c: B's output (and so
    # the statistics of a following pair) is unchanged, so one statistics pass serves all.
    stats = _preact_stats(gm, sorted({p.first for p in todo}), batches)
    with torch.no_grad():
        for p in todo:
            a, b = gm.get_submodule(p.first), gm.get_submodule(p.second)
            mean, std = stats[p.first]
            c = (mean - config.absorb_sigma * std).clamp_min(0)
            if not bool((c > 0).any()):
                continue
            if a.bias is None:
                a.bias = nn.Parameter(torch.zeros_like(c))
            a.bias.sub_(c)
            if isinstance(b, nn.Linear):
                shift = b.weight @ c
            else:
                g = b.groups
                out, in_per_group = b.weight.shape[:2]
                w = b.weight.reshape(g, out // g, in_per_group, -1).sum(-1)
                shift = torch.einsum("goi,gi->go", w, c.reshape(g, in_per_group)).reshape(out)
            if b.bias is None:
                b.bias = nn.Parameter(torch.zeros_like(shift))
            b.bias.add_(shift)
            absorbed[p.first] = {"into": p.second, "channels": int((c > 0).sum()),
                                 "mean_shift": float(c.mean())}
    return absorbed, skipped
