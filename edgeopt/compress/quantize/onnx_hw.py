"""Hardware-aware choices for the ONNX-graph int8 path: time candidate graphs with
onnxruntime on this CPU and keep an op type quantized only where that pays.

ORT runs a QDQ group as an integer kernel only when it has one for that op and dtype
mix (on x86: QLinearConv wants uint8 activations; int8 activations leave Conv in float
behind a runtime DequantizeLinear of its weights, twice as slow as fp32). Quantizing an
op without such a kernel only adds Q/DQ pairs. Measuring beats a table that goes stale
with every ORT release.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort


def session(model: onnx.ModelProto | bytes, threads: int = 1) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # ORT's own warnings are about the model, not the user
    blob = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])


def batch_one(feed: dict[str, np.ndarray], model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The first sample of a calibration batch: inputs whose leading dim is dynamic are
    sliced to 1, fixed-size inputs (silero's state [2, N, 128]) are kept as given."""
    dynamic = set()
    for v in model.graph.input:
        dims = v.type.tensor_type.shape.dim
        if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            dynamic.add(v.name)
    return {k: (a[:1] if k in dynamic and a.ndim and a.shape[0] > 1 else a)
            for k, a in feed.items()}


def latencies(sessions: list[ort.InferenceSession], feed: dict[str, np.ndarray], *,
              repeats: int = 25, budget_s: float = 2.5) -> list[float]:
    """Median seconds per run of each session, runs interleaved so that clock and cache
    drift hit every candidate alike. Stops early once ``budget_s`` is spent."""
    for s in sessions:  # warm-up: first runs allocate and pick kernels
        s.run(None, feed)
        s.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    start = time.perf_counter()
    for r in range(repeats):
        for s, t in zip(sessions, times):
            t0 = time.perf_counter()
            s.run(None, feed)
            t.append(time.perf_counter() - t0)
        if r >= 7 and time.perf_counter() - start > budget_s:
            break
    return [float(np.median(t)) for t in times]


def prune_op_types(build: Callable[[frozenset[str]], onnx.ModelProto], op_types: frozenset[str],
                   optional: list[str], feed: dict[str, np.ndarray], *, threads: int = 1,
                   margin: float = 0.02, log=print) -> tuple[frozenset[str], dict[str, str]]:
    """Drop each op type in ``optional`` whose quantization makes the model slower.

    ``build(types)`` returns the int8 graph with those op types quantized. Types are
    tried one at a time against the current set (greedy, most frequent first); a type
    stays only if removing it does not speed the model up by more than ``margin``.
    Returns the kept types and, for each dropped type, the reason.
    """
    kept = set(op_types)
    reasons: dict[str, str] = {}
    current = session(build(frozenset(kept)), threads)
    for op in optional:
        if op not in kept:
            continue
        trial_types = frozenset(kept - {op})
        trial = session(build(trial_types), threads)
        with_op, without = latencies([current, trial], feed)
        if without < with_op * (1 - margin):
            kept.discard(op)
            current = trial
            reasons[op] = (f"int8 {op} slower on this CPU: {with_op * 1e3:.2f} ms with, "
                           f"{without * 1e3:.2f} ms without")
            log(f"  hw: {op} stays float ({reasons[op]})")
        else:
            log(f"  hw: {op} int8 pays ({with_op * 1e3:.2f} ms vs {without * 1e3:.2f} ms float)")
    return frozenset(kept), reasons
