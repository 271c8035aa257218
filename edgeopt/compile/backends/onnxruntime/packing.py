"""Sub-8-bit weight storage: b-bit codes into a codebook, bit-packed into bytes.

A weight tensor is stored as the index of each value in a small table (the
quantizer's integer levels, or later a k-means codebook), ``ceil(log2(len(table)))``
bits per weight, packed LSB-first into one uint8 initializer. A chain of
constant ONNX ops rebuilds the tensor; ONNX Runtime constant-folds it when the
session is created, so the graph it runs sees a plain int8 (or float) initializer
and still fuses ``DequantizeLinear -> Conv`` into QLinearConv.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
from onnx import TensorProto

from edgeopt.compile.backends.onnxruntime.builder import GraphBuilder

PACKED_OPSET = 18  # BitwiseAnd
INT4_OPSET = 21  # INT4/UINT4 tensors


def code_bits(n_levels: int) -> int:
    """Bits per code for a table of ``n_levels`` entries."""
    if n_levels < 1:
        raise ValueError("a codebook needs at least one entry")
    return max(1, math.ceil(math.log2(n_levels)))


def packed_nbytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


# What each encoding costs a layer beyond its weight bytes, compared with a plain int8
# initializer (measured with onnx 1.23): the unpack chain's nodes and per-layer shapes,
# or one Cast node. They decide when packing a small layer would grow the file.
PACKED_OVERHEAD_BYTES = 310
INT4_OVERHEAD_BYTES = 30


def packed_size(n: int, n_levels: int) -> int:
    """Estimated bytes of ``n`` weights as packed codes (an int8 initializer: ``n``)."""
    return packed_nbytes(n, code_bits(n_levels)) + PACKED_OVERHEAD_BYTES


def int4_size(n: int) -> int:
    """Estimated bytes of ``n`` weights as INT4 widened by a Cast (int8: ``n``)."""
    return packed_nbytes(n, 4) + INT4_OVERHEAD_BYTES


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes in ``[0, 2**bits)`` -> uint8 bitstream, code i at bits ``[i*bits, (i+1)*bits)``."""
    if not 1 <= bits <= 8:
        raise ValueError(f"code width must be 1..8 bits, got {bits}")
    codes = np.asarray(codes).reshape(-1)
    if codes.size and (codes.min() < 0 or codes.max() >= 2**bits):
        raise ValueError(f"codes out of range for {bits} bits: [{codes.min()}, {codes.max()}]")
    shifts = np.arange(bits, dtype=np.uint8)
    stream = ((codes.astype(np.uint8)[:, None] >> shifts) & 1).reshape(-1)
    return np.packbits(stream, bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: the first ``n`` codes, as int64."""
    stream = np.unpackbits(np.asarray(packed, np.uint8).reshape(-1), bitorder="little")
    stream = stream[: n * bits].reshape(n, bits).astype(np.int64)
    return stream @ (1 << np.arange(bits, dtype=np.int64))


def encode(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of each value in an ascending ``table``; every value must be an entry."""
    table = np.asarray(table)
    values = np.asarray(values)
    codes = np.searchsorted(table, values).clip(0, len(table) - 1)
    bad = table[codes] != values
    if bad.any():
        raise ValueError(f"value {values[bad].reshape(-1)[0]} is not in the codebook")
    return codes


def emit_codebook_tensor(b: GraphBuilder, codes: np.ndarray, table: np.ndarray) -> str:
    """A packed-codes initializer plus the constant subgraph ``table[codes]``.

    The result has ``codes``' shape and ``table``'s dtype: an int8/uint8 table gives
    integer weights for ``DequantizeLinear``; a float32 table (clustered weights)
    gives the float weights themselves.
    """
    codes = np.asarray(codes)
    table = np.asarray(table)
    n, bits = codes.size, code_bits(len(table))
    b.require_opset(PACKED_OPSET)
    # Stored as [nbytes, 1] so that the shift below broadcasts without an Unsqueeze.
    packed = b.const(pack_codes(codes, bits).reshape(-1, 1), dedupe=False)
    # One bit per element, LSB first: [nbytes, 8] -> [nbytes*8].
    shifts = b.const(np.arange(8, dtype=np.uint8).reshape(1, 8))
    bit = b.op("BitwiseAnd", [b.op("BitShift", [packed, shifts], direction="RIGHT"),
                              b.const(np.uint8(1))])
    flat = b.op("Reshape", [bit, b.const(np.array([-1], np.int64))])
    if packed_nbytes(n, bits) * 8 != n * bits:
        flat = b.op("Slice", [flat, b.const(np.array([0], np.int64)),
                              b.const(np.array([n * bits], np.int64))])
    # [*shape, bits]: summing the weighted last axis leaves the codes in the weight's
    # shape, and Gather keeps it.
    per_code = b.op("Reshape", [flat, b.const(np.array([*codes.shape, bits], np.int64))])
    # uint8 has no Mul/ReduceSum kernel in ONNX Runtime; int32 holds any code.
    weighted = b.op("Mul", [b.op("Cast", [per_code], to=TensorProto.INT32),
                            b.const(1 << np.arange(bits, dtype=np.int32))])
    index = b.op("ReduceSum", [weighted, b.const(np.array([-1], np.int64))], keepdims=0)
    return b.op("Gather", [b.const(table), index], axis=0)


def emit_int4_tensor(b: GraphBuilder, q: np.ndarray, *, signed: bool,
                     widen: bool) -> str:
    """An INT4 (``signed``) or UINT4 initializer holding ``q``.

    ``widen`` adds a constant ``Cast`` to int8/uint8: ONNX Runtime folds it at session
    creation and then fuses the int8 QDQ pattern into integer kernels, which it does
    not do for ``DequantizeLinear(int4)`` (that runs as a per-call dequantize plus a
    float Conv/Gemm). The file holds the same 4-bit initializer either way.
    """
    lo, hi = (-8, 7) if signed else (0, 15)
    if q.size and (q.min() < lo or q.max() > hi):
        raise ValueError(f"values out of the 4-bit range [{lo}, {hi}]")
    b.require_opset(INT4_OPSET)
    name = b.const(q.astype(ml_dtypes.int4 if signed else ml_dtypes.uint4), dedupe=False)
    if not widen:
        return name
    return b.op("Cast", [name], to=TensorProto.INT8 if signed else TensorProto.UINT8)

