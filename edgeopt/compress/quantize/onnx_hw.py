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

from edgeopt.core.inputs import batch_axis
from edgeopt.core.onnx_graph import describe
from edgeopt.core.ort_options import session_options


def session(model: onnx.ModelProto | bytes, threads: int = 1) -> ort.InferenceSession:
    blob = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(blob, session_options(threads),
                                providers=["CPUExecutionProvider"])


def batch_one(feed: dict[str, np.ndarray], model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The first sample of a calibration batch: each input is sliced to 1 along its batch
    axis (its first dynamic dim: axis 1 for silero's state [2, N, 128]); fully fixed
    inputs are kept as given."""
    axes = {}
    for info in describe(model)[0]:
        if any(not isinstance(d, int) for d in info.shape):
            axes[info.name] = batch_axis(list(info.shape))
    out = {}
    for k, a in feed.items():
        axis = axes.get(k)
        out[k] = a if axis is None or a.ndim <= axis else np.take(a, [0], axis=axis)
    return out


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


NOISE_S = 10e-6


def prune_op_types(build: Callable[[frozenset[str]], onnx.ModelProto], op_types: frozenset[str],
                   optional: list[str], feed: dict[str, np.ndarray], *, threads: int = 1,
                   margin: float = 0.10, log=print) -> tuple[frozenset[str], dict[str, str]]:
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
        # Both a relative and an absolute margin: below ~10 us a tiny model's timings are
        # scheduler noise, and dropping a weight op for noise gives up its 4x size win.
        if without < with_op * (1 - margin) and with_op - without > NOISE_S:
            kept.discard(op)
            current = trial
            reasons[op] = (f"int8 {op} slower on this CPU: {with_op * 1e3:.2f} ms with, "
                           f"{without * 1e3:.2f} ms without")
            log(f"  hw: {op} stays float ({reasons[op]})")
        else:
            log(f"  hw: {op} int8 pays ({with_op * 1e3:.2f} ms vs {without * 1e3:.2f} ms float)")
    return frozenset(kept), reasons
