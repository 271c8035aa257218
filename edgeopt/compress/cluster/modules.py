"""Clustered layers: every weight is one of ``k`` shared values (a codebook).

``ClusteredConv2d`` / ``ClusteredLinear`` subclass ``nn.Conv2d`` / ``nn.Linear`` so
the rest of edgeopt (leaf_modules, the exporters, the per-layer policy) still sees
convs and linears. They hold

* ``centroids``: the ``k`` shared values, a trained parameter;
* ``codes``: the index of each weight's centroid, an int64 buffer of the weight's
  shape (int64 because torch reads a uint8 index tensor as a boolean mask).

The forward computes with ``centroids[codes]`` (the op ``edgeopt::clustered_weight``):
its backward adds up the gradients of all weights sharing a centroid, which is exactly
the centroid gradient of Han et al. (2016). The op also takes the stored ``weight``,
which it does not read: torch.export then records the layer as a wrapped stored
weight, and ``reload.py`` lifts an exported clustered model back into these modules
(the ``edgeopt compress --out model.pt2`` -> ``edgeopt compile`` path). ``weight`` stays an ordinary (frozen) parameter, kept
equal to ``centroids[codes]`` by ``sync_weight``, so code that reads ``.weight``
(TVM's exporter, a later quantize step, state_dict users) sees the right values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.core.forms import CodebookWeight


@torch.library.custom_op("edgeopt::clustered_weight", mutates_args=())
def clustered_weight_op(weight: torch.Tensor, centroids: torch.Tensor,
                        codes: torch.Tensor) -> torch.Tensor:
    """``centroids[codes]``; ``weight`` (equal to it, frozen) only marks the layer."""
    return centroids[codes]


@clustered_weight_op.register_fake
def _(weight, centroids, codes):
    return centroids.new_empty(codes.shape)


def _cw_setup(ctx, inputs, output):
    _, centroids, codes = inputs
    ctx.save_for_backward(codes)
    ctx.k = centroids.numel()


def _cw_backward(ctx, grad):
    (codes,) = ctx.saved_tensors
    summed = torch.zeros(ctx.k, dtype=grad.dtype, device=grad.device)
    summed.index_add_(0, codes.reshape(-1), grad.reshape(-1))
    return None, summed, None


clustered_weight_op.register_autograd(_cw_backward, setup_context=_cw_setup)


class _Clustered:
    """What both clustered layers share (a mixin ahead of nn.Conv2d / nn.Linear)."""

    centroids: nn.Parameter
    codes: torch.Tensor
    weight: nn.Parameter

    def _init_codebook(self, centroids: torch.Tensor, codes: torch.Tensor) -> None:
        if codes.shape != self.weight.shape:
            raise ValueError(f"codes shape {tuple(codes.shape)} != weight shape "
                             f"{tuple(self.weight.shape)}")
        self.centroids = nn.Parameter(centroids.detach().float().clone().reshape(-1))
        self.register_buffer("codes", codes.detach().to(torch.int64).clone())
        # Frozen: the centroids are what trains; the copy only mirrors them.
        self.weight.requires_grad_(False)
        self.sync_weight()

    @property
    def clusters(self) -> int:
        return self.centroids.numel()

    def clustered_weight(self) -> torch.Tensor:
        return clustered_weight_op(self.weight, self.centroids, self.codes)

    @torch.no_grad()
    def sync_weight(self) -> None:
        """Copy ``centroids[codes]`` into ``weight`` (after the centroids changed)."""
        self.weight.copy_(self.centroids[self.codes])

    def table_and_codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The centroids in ascending order and the codes re-indexed to that order
        (what an ascending codebook file format stores)."""
        table, order = torch.sort(self.centroids.detach())
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel())
        return table, rank[self.codes]

    def stored_weight(self) -> CodebookWeight:
        """What a backend stores (core.forms): the ascending table and the codes."""
        return CodebookWeight(*self.table_and_codes())

    def extra_repr(self) -> str:  # type: ignore[misc]
        return f"{super().extra_repr()}, clusters={self.clusters}"  # type: ignore[misc]


class ClusteredConv2d(_Clustered, nn.Conv2d):
    @classmethod
    def from_float(cls, conv: nn.Conv2d, centroids: torch.Tensor,
                   codes: torch.Tensor) -> ClusteredConv2d:
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=conv.padding_mode)
        with torch.no_grad():
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        new._init_codebook(centroids, codes)
        return new.train(conv.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.clustered_weight(), self.bias)


class ClusteredLinear(_Clustered, nn.Linear):
    @classmethod
    def from_float(cls, linear: nn.Linear, centroids: torch.Tensor,
                   codes: torch.Tensor) -> ClusteredLinear:
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        with torch.no_grad():
            if linear.bias is not None:
                new.bias.copy_(linear.bias)
        new._init_codebook(centroids, codes)
        return new.train(linear.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.clustered_weight(), self.bias)


CLUSTERED_LAYERS = (ClusteredConv2d, ClusteredLinear)


def clustered(conv_or_linear: nn.Module, centroids: torch.Tensor,
              codes: torch.Tensor) -> ClusteredConv2d | ClusteredLinear:
    cls = ClusteredConv2d if isinstance(conv_or_linear, nn.Conv2d) else ClusteredLinear
    return cls.from_float(conv_or_linear, centroids, codes)
