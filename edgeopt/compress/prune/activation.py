"""Activation-weighted channel importance: what each channel contributes to the layers
that read it, measured on data.

A channel c read by a conv or linear layer L contributes ``||x_c|| * ||W_L[:, c]||`` to
L's output (x_c: the channel's activations at L's input over a few batches; W_L[:, c]:
every weight of L that reads c, each of L's output rows scaled to unit norm first). This
is the structured form of Wanda's |W| * ||X|| (Sun et al., 2023), summed over a
channel's readers.

Why not only the weights: a weight norm depends on how the network is parametrised, not
on what it computes. With batch norm folded into the convolutions (every ONNX export in
eval mode), each channel's weights are rescaled by gamma / sigma, and an L2 ranking of
the same network changes: on MobileNetV2 it kept 16 of one block's 192 channels where
the unfolded model kept 80. The activations a reader sees, and so this score, are the
same in both forms. Each reader's scores are divided by their mean before summing, so a
reader whose own output scale is arbitrary (a conv before its batch norm) weighs the
same as any other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch_pruning as tp
from torch import nn

from edgeopt.core.train import TrainData

_READS = (tp.pruner.function.prune_conv_in_channels, tp.pruner.function.prune_linear_in_channels)


def _in_weight_norms(layer: nn.Module) -> torch.Tensor:
    """||W[:, c]|| for every input channel c of a conv or linear layer, each output row
    of W first scaled to unit norm: a batch norm after the layer, folded in, scales whole
    rows, so this is the same with it folded or not."""
    w = layer.weight.detach()
    w = w / w.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, *[1] * (w.dim() - 1))
    if isinstance(layer, nn.Linear):
        return w.pow(2).sum(0).sqrt()
    groups = layer.groups
    out_per = w.shape[0] // groups
    # (out, in/groups, k...) -> (groups, out/groups, in/groups, k) -> per (group, in) channel
    per = w.reshape(groups, out_per, w.shape[1], -1).pow(2).sum((1, 3))
    return per.reshape(-1).sqrt()  # group-major: input channel g * in_per + j


class ActivationImportance(tp.importance.GroupMagnitudeImportance):
    """Scores a group from its readers' input activations (see the module docstring).
    ``collect`` must run on the model as it is before each scoring."""

    def __init__(self) -> None:
        super().__init__(p=2, group_reduction="sum", normalizer="mean")
        self.rms: dict[nn.Module, torch.Tensor] = {}

    @torch.no_grad()
    def collect(self, model: nn.Module, data: TrainData, batches: int, batch_size: int,
                seed: int) -> None:
        sums: dict[nn.Module, torch.Tensor] = {}
        counts: dict[nn.Module, int] = {}
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(data), generator=gen)[: batches * batch_size]
        with _input_stats(model, sums, counts):
            for idx in order.split(batch_size):
                model(data.x[idx])
        self.rms = {m: (s / counts[m]).sqrt() for m, s in sums.items()}

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        if not self.rms:
            raise RuntimeError("ActivationImportance: collect() before scoring")
        terms, roots = self._members(group)
        if not terms:
            return None  # no layer reads these channels: Torch-Pruning leaves the group
        return self._normalize(self._reduce(terms, roots), self.normalizer)

    def _members(self, group) -> tuple[list[torch.Tensor], list[list[int]]]:
        terms, roots = [], []
        for i, (dep, idxs) in enumerate(group):
            layer = dep.target.module
            if dep.handler not in _READS or layer not in self.rms:
                continue
            score = self.rms[layer][idxs] * _in_weight_norms(layer)[idxs]
            mean = score.mean()
            if mean > 0:
                terms.append(score / mean)
                roots.append(group[i].root_idxs)
        return terms, roots


@contextlib.contextmanager
def _input_stats(model: nn.Module, sums: dict, counts: dict) -> Iterator[None]:
    """Accumulate sum(x_c ** 2) and the number of values per input channel of every conv
    and linear layer."""

    def hook(module, args):
        x = args[0].detach()
        if isinstance(module, nn.Linear):
            flat = x.reshape(-1, x.shape[-1])
        else:
            flat = x.transpose(0, 1).reshape(x.shape[1], -1).T
        sq = flat.pow(2).sum(0)
        sums[module] = sums.get(module, 0) + sq
        counts[module] = counts.get(module, 0) + flat.shape[0]

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


__all__ = ["ActivationImportance"]
