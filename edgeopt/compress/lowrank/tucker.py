"""Tucker-2 and CP factorisation of a k x k convolution (groups=1), via tensorly.

Tucker-2 (Kim et al. 2016): ``W[o,i,h,w] ~= sum_ab G[a,b,h,w] U[o,a] V[i,b]`` is
``Conv1x1(cin -> r_in; V^T) -> Conv kxk(r_in -> r_out; G) -> Conv1x1(r_out -> cout; U)``.

CP (Lebedev et al. 2015): ``W[o,i,h,w] ~= sum_r A[o,r] B[i,r] C[h,r] D[w,r]`` is
``Conv1x1(cin -> R; B^T) -> depthwise kx1 (C) -> depthwise 1xk (D) -> Conv1x1(R -> cout; A)``.

Both are exact re-orderings of the sum for zero padding: the first 1x1 has no
bias, so padding its output with zeros equals padding its input, and a separable
kx1 then 1xk conv with paddings (p_h, 0) and (0, p_w) zero-pads the same border
as the kxk one. Only the last conv carries the original bias.

tensorly runs on its pytorch backend inside ``backend_context``, so the process-wide
backend another caller may have chosen is left alone. Not numpy: its SVD of the
unfoldings was 100x slower here (full matrices, BLAS threads fighting over shared
cores); float64 throughout.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from edgeopt.core.extras import LazyModule

# The `compress` extra: imported by the first factorisation, so that compress imports without.
tl = LazyModule("tensorly", extra="compress", feature="low-rank factorisation")
decomposition = LazyModule("tensorly.decomposition", extra="compress",
                           feature="low-rank factorisation")


def _conv(cin: int, cout: int, kernel, weight: torch.Tensor, like: nn.Conv2d, **kw) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel, bias=False, device=like.weight.device,
                     dtype=like.weight.dtype, **kw)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


def _last(r: int, conv: nn.Conv2d, weight: torch.Tensor) -> nn.Conv2d:
    last = _conv(r, conv.out_channels, 1, weight, conv)
    if conv.bias is not None:
        last.bias = nn.Parameter(conv.bias.detach().clone())
    return last


def _rel_error(w: torch.Tensor, approx: torch.Tensor) -> float:
    return float((w - approx).norm() / w.norm().clamp_min(1e-300))


def tucker2(conv: nn.Conv2d, r_in: int, r_out: int, *, iters: int = 20) -> tuple[nn.Sequential,
                                                                                  float]:
    """The Tucker-2 Sequential of ``conv`` and the weight's relative reconstruction error."""
    w = conv.weight.detach().double().cpu()
    with tl.backend_context("pytorch"):
        (core, (u_out, u_in)), _ = decomposition.partial_tucker(
            w, rank=[r_out, r_in], modes=[0, 1], n_iter_max=iters, init="svd", random_state=0)
        approx = tl.tenalg.multi_mode_dot(core, [u_out, u_in], modes=[0, 1])
    first = _conv(conv.in_channels, r_in, 1, u_in.T[:, :, None, None], conv)
    middle = _conv(r_in, r_out, conv.kernel_size, core, conv, stride=conv.stride,
                   padding=conv.padding, dilation=conv.dilation, padding_mode=conv.padding_mode)
    last = _last(r_out, conv, u_out[:, :, None, None])
    return nn.Sequential(first, middle, last), _rel_error(w, approx)


def cp(conv: nn.Conv2d, rank: int, *, iters: int = 100) -> tuple[nn.Sequential, float]:
    """The CP Sequential of ``conv`` and the weight's relative reconstruction error."""
    w = conv.weight.detach().double().cpu()
    with tl.backend_context("pytorch"), warnings.catch_warnings():
        # A rank above a mode's size makes tensorly fill the SVD init randomly: that is fine.
        warnings.simplefilter("ignore", UserWarning)
        weights, factors = decomposition.parafac(w, rank=rank, n_iter_max=iters, init="svd",
                                                 random_state=0)
        approx = tl.cp_to_tensor((weights, factors))
    a, b, c, d = factors
    a = a * weights[None, :]
    # Give every factor the same column norm: the product is unchanged and fine-tuning
    # with one learning rate does not see one factor orders of magnitude larger.
    norms = [f.norm(dim=0) + 1e-12 for f in (a, b, c, d)]
    geo = torch.stack(norms).prod(0) ** 0.25
    a, b, c, d = (f * (geo / n)[None, :] for f, n in zip((a, b, c, d), norms))
    kh, kw = conv.kernel_size
    first = _conv(conv.in_channels, rank, 1, b.T[:, :, None, None], conv)
    vertical = _conv(rank, rank, (kh, 1), c.T[:, None, :, None], conv, groups=rank,
                     stride=(conv.stride[0], 1), padding=_padding(conv, 0),
                     dilation=(conv.dilation[0], 1), padding_mode=conv.padding_mode)
    horizontal = _conv(rank, rank, (1, kw), d.T[:, None, None, :], conv, groups=rank,
                       stride=(1, conv.stride[1]), padding=_padding(conv, 1),
                       dilation=(1, conv.dilation[1]), padding_mode=conv.padding_mode)
    last = _last(rank, conv, a[:, :, None, None])
    return nn.Sequential(first, vertical, horizontal, last), _rel_error(w, approx)


def _padding(conv: nn.Conv2d, axis: int):
    """The padding of the separable conv along ``axis`` (0: rows, 1: columns)."""
    if isinstance(conv.padding, str):
        return conv.padding  # "same"/"valid" mean the same thing per axis
    p = conv.padding[axis]
    return (p, 0) if axis == 0 else (0, p)
