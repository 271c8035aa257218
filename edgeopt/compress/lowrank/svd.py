"""Truncated-SVD split of a Linear layer or a 1x1 convolution into two thinner ones.

``W ~= U_r S_r V_r^T`` becomes ``second(first(x))`` with ``first = sqrt(S_r) V_r^T``
and ``second = U_r sqrt(S_r)``: splitting the singular values evenly keeps both
factors at the same scale, which fine-tuning with one learning rate prefers.
"""

from __future__ import annotations

import torch
from torch import nn


def _factors(mat: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(mat.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    first = root[:, None] * vh[:rank]  # (rank, in)
    second = u[:, :rank] * root[None, :]  # (out, rank)
    return first, second


def _bias(module: nn.Module) -> torch.Tensor | None:
    return None if module.bias is None else module.bias.detach().clone()


def split_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """``Sequential(Linear(in, rank, bias=False), Linear(rank, out, bias))``."""
    first, second = _factors(layer.weight, rank)
    dtype, device = layer.weight.dtype, layer.weight.device
    a = nn.Linear(layer.in_features, rank, bias=False, device=device, dtype=dtype)
    b = nn.Linear(rank, layer.out_features, bias=layer.bias is not None, device=device,
                  dtype=dtype)
    with torch.no_grad():
        a.weight.copy_(first)
        b.weight.copy_(second)
        if layer.bias is not None:
            b.bias.copy_(_bias(layer))
    return nn.Sequential(a, b)


def split_pointwise(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """A 1x1 conv as ``Conv1x1(cin -> rank, stride) -> Conv1x1(rank -> cout, bias)``.

    The stride goes on the first conv: it subsamples before the second one does
    any work, and a strided 1x1 conv commutes with the second (pointwise) one.
    """
    out, cin = conv.out_channels, conv.in_channels
    first, second = _factors(conv.weight.reshape(out, cin), rank)
    dtype, device = conv.weight.dtype, conv.weight.device
    a = nn.Conv2d(cin, rank, 1, stride=conv.stride, padding=conv.padding, bias=False,
                  padding_mode=conv.padding_mode, device=device, dtype=dtype)
    b = nn.Conv2d(rank, out, 1, bias=conv.bias is not None, device=device, dtype=dtype)
    with torch.no_grad():
        a.weight.copy_(first[:, :, None, None])
        b.weight.copy_(second[:, :, None, None])
        if conv.bias is not None:
            b.bias.copy_(_bias(conv))
    return nn.Sequential(a, b)
