"""Fake quantization as torch custom ops.

Registered ops (``edgeopt::fake_quant``, ``edgeopt::quantize_bias``) survive
``torch.export`` as single nodes, so a compressed model saved as ``.pt2`` can
be loaded again and lowered to the same QDQ graph: ``reload.py`` recognises
them. (torch's own fake-quantize kernels have no meta implementation and
cannot be exported.)

Gradients: straight-through for the input, masked outside the range, and the
LSQ gradient for the scale (Esser et al. 2020, "Learned Step Size
Quantization"), so that quantization-aware training can learn scales through
the very ops that export. Zero-points get no gradient: they stay fixed.
"""

from __future__ import annotations

import math

import torch

INT32_MAX = 2**31 - 1


def _expand(t: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    if axis < 0 or t.numel() == 1:
        return t.reshape(())
    shape = [1] * like.dim()
    shape[axis] = -1
    return t.reshape(shape)


@torch.library.custom_op("edgeopt::fake_quant", mutates_args=())
def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
               qmax: int, axis: int) -> torch.Tensor:
    """Quantize-dequantize; ``axis`` < 0 means per-tensor.

    Divides by the scale, as ONNX QuantizeLinear (and ORT's kernels) do; torch's
    own fake-quantize multiplies by the reciprocal, which rounds some ties the
    other way, and is slower because it also builds the backward mask.
    """
    s = _expand(scale, x, axis).to(x.dtype)
    z = _expand(zero_point, x, axis).to(x.dtype)
    # In place on the fresh quotient: these activations are the largest tensors
    # in the model, and every temporary costs a pass over memory.
    q = torch.round(x / s)
    return q.add_(z).clamp_(qmin, qmax).sub_(z).mul_(s)


@fake_quant.register_fake
def _(x, scale, zero_point, qmin, qmax, axis):
    return torch.empty_like(x)


def _reduce_to(g: torch.Tensor, scale: torch.Tensor, axis: int) -> torch.Tensor:
    """Sum an elementwise gradient over every element that shares a scale."""
    if axis < 0 or scale.numel() == 1:
        return g.sum().reshape(scale.shape)
    dims = [d for d in range(g.dim()) if d != axis]
    return g.sum(dim=dims).reshape(scale.shape)


def lsq_grad_scale(x: torch.Tensor, scale: torch.Tensor, qmax: int) -> float:
    """LSQ's g = 1/sqrt(N * Q_P), N the number of elements sharing one scale.

    Without it the scale's gradient, a sum over N elements, dwarfs the
    weights' and the scale takes steps far too large for its magnitude.
    N counts every element of this call (for an activation, the whole batch).
    """
    n = max(x.numel() // max(scale.numel(), 1), 1)
    return 1.0 / math.sqrt(n * max(qmax, 1))


def _fq_setup(ctx, inputs, output):
    x, scale, zero_point, qmin, qmax, axis = inputs
    ctx.save_for_backward(x, scale, zero_point)
    ctx.qrange = (qmin, qmax, axis)


def _fq_backward(ctx, grad):
    x, scale, zero_point = ctx.saved_tensors
    qmin, qmax, axis = ctx.qrange
    s = _expand(scale, x, axis).to(x.dtype)
    z = _expand(zero_point, x, axis).to(x.dtype)
    u = x / s
    r = torch.round(u)
    q = r + z
    below, above = q < qmin, q > qmax
    inside = ~(below | above)
    grad_x = grad * inside if ctx.needs_input_grad[0] else None
    grad_s = None
    if ctx.needs_input_grad[1]:
        # d/ds of (clamp(round(x/s) + z) - z) * s with round's derivative taken as 1:
        # round(x/s) - x/s inside the range, and the clamped level qmin - z / qmax - z outside.
        ds = torch.where(inside, r - u, torch.where(below, qmin - z, qmax - z))
        grad_s = _reduce_to(grad * ds, scale, axis) * lsq_grad_scale(x, scale, qmax)
        grad_s = grad_s.to(scale.dtype)
    return grad_x, grad_s, None, None, None, None


fake_quant.register_autograd(_fq_backward, setup_context=_fq_setup)


def pow2_round(q: torch.Tensor, kmax: int) -> torch.Tensor:
    """Round values (already divided by the scale) to 0 or +-2^k, k in [0, kmax],
    in the log domain: 2^k and 2^(k+1) meet at 2^(k+1/2), not at their mean."""
    mag = q.abs()
    k = torch.round(torch.log2(mag.clamp(min=2.0**-30))).clamp_(0, kmax)
    return torch.where(mag < 0.5, torch.zeros_like(q), torch.sign(q) * torch.exp2(k))


@torch.library.custom_op("edgeopt::fake_quant_pow2", mutates_args=())
def fake_quant_pow2(x: torch.Tensor, scale: torch.Tensor, kmax: int, axis: int) -> torch.Tensor:
    """Power-of-two quantize-dequantize: scale * (0 or +-2^k)."""
    s = _expand(scale, x, axis).to(x.dtype)
    return pow2_round(x / s, kmax).mul_(s)


@fake_quant_pow2.register_fake
def _(x, scale, kmax, axis):
    return torch.empty_like(x)


def _p2_setup(ctx, inputs, output):
    x, scale, kmax, axis = inputs
    ctx.save_for_backward(x, scale)
    ctx.qrange = (kmax, axis)


def _p2_backward(ctx, grad):
    x, scale = ctx.saved_tensors
    kmax, axis = ctx.qrange
    u = x / _expand(scale, x, axis).to(x.dtype)
    inside = u.abs() <= 2.0**kmax * 1.5
    grad_x = grad * inside if ctx.needs_input_grad[0] else None
    grad_s = None
    if ctx.needs_input_grad[1]:
        # The LSQ rule with the log-domain rounding in place of round(): pow2_round(u) - u
        # where the input's gradient passes straight through, and the top level
        # +-2^kmax (what s multiplies there) beyond it.
        top = torch.sign(u) * 2.0**kmax
        ds = torch.where(inside, pow2_round(u, kmax) - u, top)
        grad_s = _reduce_to(grad * ds, scale, axis) * lsq_grad_scale(x, scale, 2**kmax)
        grad_s = grad_s.to(scale.dtype)
    return grad_x, grad_s, None, None


fake_quant_pow2.register_autograd(_p2_backward, setup_context=_p2_setup)


@torch.library.custom_op("edgeopt::quantize_bias", mutates_args=())
def quantize_bias(bias: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int32 bias on the accumulator grid (input scale x weight scale)."""
    return torch.clamp(torch.round(bias / scale), -INT32_MAX, INT32_MAX) * scale


@quantize_bias.register_fake
def _(bias, scale):
    return torch.empty_like(bias)


quantize_bias.register_autograd(
    lambda ctx, grad: (grad, None), setup_context=lambda ctx, inputs, output: None
)
