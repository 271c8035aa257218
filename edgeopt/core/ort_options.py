"""The ONNX Runtime session options every edgeopt session uses (onnxruntime only: the
device runtime imports it too, runtime/pyproject.toml ships it).

Why a shared module: on x86 CPUs without VNNI (AVX2-only and AVX-512 without VNNI, e.g.
the AMD EPYC this project's CI draws), ORT's u8 x s8 integer GEMM and convolution kernels
multiply with VPMADDUBSW, which sums pairs of products in int16 and saturates. An int8
weight outside [-64, 63] times an activation near 255 overflows; measured here,
MatMulInteger is off by 180,534 (of ~8e6) and QLinearConv by 48 output steps. ORT's own
fix is the session entry below: at load time, on such CPUs only, it rewrites every u8 x s8
product whose constant weights leave [-64, 63] as u8 x u8 (an exact kernel), and is a
no-op where VNNI makes the u8 x s8 kernel exact. Without it an int8 artifact's accuracy
depended on the CPU it ran on, and nothing said so (tests/core/test_ort_options.py).
"""

from __future__ import annotations

import onnxruntime as ort

# onnxruntime_session_options_config_keys.h: kOrtSessionOptionsX64QuantPrecision ("1" on).
X64_QUANT_PRECISION = "session.x64quantprecision"


def session_options(threads: int | None = None, *,
                    exact_int8: bool = True) -> ort.SessionOptions:
    """Options for a CPU session: ``threads`` intra-op threads (ORT's default when None),
    all graph optimizations (set, not left to ORT's default, which is the same today),
    ORT's warnings off (they are about the model's serialization, not the user's input),
    and exact int8 products unless ``exact_int8`` is False (measurement only: what the
    exact kernel costs)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if exact_int8:
        opts.add_session_config_entry(X64_QUANT_PRECISION, "1")
    return opts
