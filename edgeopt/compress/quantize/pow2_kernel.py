"""Reference shift-and-add kernels for power-of-two weights.

A power-of-two layer's stored integers are 0 or +-2^k, so its integer
accumulator needs no multiplier:

    acc[o] = sum_k ( sum_{j: w[o,j] = +2^k} x_j  -  sum_{j: w[o,j] = -2^k} x_j ) << k

This is what a multiplier-less accelerator (or a microcontroller without a
fast multiply) computes. These numpy kernels only add, subtract and shift
integers; they exist to prove that the quantized layer's integer output is
exactly reproducible that way, and as the reference a hardware port is
checked against. They are not fast.
"""

from __future__ import annotations

import numpy as np
import torch

from edgeopt.compress.quantize.fake_quant import QuantConv2d, QuantLinear
from edgeopt.compress.quantize.spec import Scheme
from edgeopt.core.errors import ConfigError


def decompose(int_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sign in {-1, 0, 1}, exponent k) with int_weight == sign << k, checking the form."""
    w = np.asarray(int_weight, dtype=np.int64)
    mag = np.abs(w)
    nonzero = mag > 0
    exp = np.zeros_like(w)
    exp[nonzero] = np.log2(mag[nonzero]).round().astype(np.int64)
    if not np.array_equal(np.where(nonzero, np.left_shift(1, exp), 0), mag):
        raise ConfigError("weights are not all 0 or +-2^k")
    return np.sign(w), exp


def _shift_add(cols: np.ndarray, sign: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """cols: (N, J, L) integer inputs; sign/exp: (O, J). Returns (N, O, L) int64."""
    n, _, length = cols.shape
    acc = np.zeros((n, sign.shape[0], length), dtype=np.int64)
    for o in range(sign.shape[0]):
        for k in np.unique(exp[o][sign[o] != 0]):
            pos = (sign[o] > 0) & (exp[o] == k)
            neg = (sign[o] < 0) & (exp[o] == k)
            part = cols[:, pos, :].sum(axis=1) - cols[:, neg, :].sum(axis=1)
            acc[:, o, :] += np.left_shift(part, k)
    return acc


def _im2col(x: np.ndarray, conv: QuantConv2d) -> tuple[np.ndarray, tuple[int, int]]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
        conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    # Zero padding of the real input is zero in (x - zero_point): pad with 0 here.
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, c, h, w = x.shape
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (w - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[:, :, i * dh: i * dh + sh * oh: sh, j * dw: j * dw + sw * ow: sw]
    return cols.reshape(n, c * kh * kw, oh * ow), (oh, ow)


def shift_add_layer(layer: QuantConv2d | QuantLinear, x_int: np.ndarray,
                    bias_int: np.ndarray | None = None) -> np.ndarray:
    """The int32 accumulator (plus integer bias) of a power-of-two layer on integer
    inputs ``x_int`` (activation integers minus their zero-point), computed with
    shifts and adds only. Conv: NCHW in, NCHW out; linear: (N, in) -> (N, out)."""
    if layer.w_spec.scheme is not Scheme.POW2:
        raise ConfigError(f"shift-add kernel needs pow2 weights, layer has {layer.w_spec.label}")
    w = layer.int_weight().numpy().astype(np.int64)
    x = np.asarray(x_int, dtype=np.int64)
    if isinstance(layer, QuantConv2d):
        if layer.groups != 1:
            raise ConfigError("the reference shift-add conv handles groups=1 only")
        cols, (oh, ow) = _im2col(x, layer)
        sign, exp = decompose(w.reshape(w.shape[0], -1))
        out = _shift_add(cols, sign, exp).reshape(x.shape[0], w.shape[0], oh, ow)
        if bias_int is not None:
            out += np.asarray(bias_int, dtype=np.int64).reshape(1, -1, 1, 1)
        return out
    sign, exp = decompose(w)
    out = _shift_add(x[:, :, None], sign, exp)[:, :, 0]
    if bias_int is not None:
        out += np.asarray(bias_int, dtype=np.int64).reshape(1, -1)
    return out


def integer_bias(layer: QuantConv2d | QuantLinear) -> np.ndarray | None:
    """The int32 bias on the accumulator grid, as the artifact stores it."""
    if layer.bias is None or layer.bias_scale is None:
        return None
    q = torch.round(layer.bias.detach() / layer.bias_scale.reshape(-1))
    return q.numpy().astype(np.int64)
