"""Wall-clock latency of one forward pass, in milliseconds."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeopt.core.errors import ConfigError
from edgeopt.evaluate.chunked import program_chunked, unchunked
from edgeopt.evaluate.runnable import NumpyFn, as_numpy_fn, is_torch_module


@dataclass
class Latency:
    batch: int
    p50_ms: float
    p90_ms: float
    mean_ms: float
    repeats: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Latency:
        return cls(**data)

    @classmethod
    def from_seconds(cls, times: list[float], *, batch: int, threads: int) -> Latency:
        """Percentiles of per-call wall times given in seconds."""
        ms = np.asarray(times) * 1000.0
        p50, p90 = np.percentile(ms, [50, 90])
        return cls(batch=batch, p50_ms=float(p50), p90_ms=float(p90), mean_ms=float(ms.mean()),
                   repeats=len(times), threads=threads)


def measure_latency(
    runnable: Any,
    sample_shape: tuple[int, ...],
    *,
    batch: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    min_time_s: float = 0.0,
    threads: int | None = None,
    seed: int = 0,
) -> Latency:
    """Time ``runnable`` on random float32 input of shape ``(batch, *sample_shape)``.

    Runs ``warmup`` untimed calls (lazy initialisation, caches, allocator), then
    at least ``repeats`` timed calls and keeps going until ``min_time_s`` has
    passed, so fast models get enough samples for stable percentiles.

    ``threads`` sets torch's intra-op thread count for a torch module (restored
    afterwards). Other runnables fix their threads when created (a Predictor's
    session options), so it is ignored for them and their own count is recorded.
    """
    if batch < 1 or repeats < 1 or warmup < 0:
        raise ConfigError(
            f"latency needs batch >= 1, repeats >= 1, warmup >= 0 "
            f"(got batch={batch}, repeats={repeats}, warmup={warmup})"
        )
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")

    fn = as_numpy_fn(program_chunked(runnable, batch))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *sample_shape), dtype=np.float32)

    if not is_torch_module(unchunked(runnable)):
        used = getattr(runnable, "threads", None) or os.cpu_count() or 1
        return _time(fn, x, warmup, repeats, min_time_s, threads=int(used))

    import torch

    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        return _time(fn, x, warmup, repeats, min_time_s, threads=torch.get_num_threads())
    finally:
        torch.set_num_threads(before)


def _time(
    fn: NumpyFn, x: np.ndarray, warmup: int, repeats: int, min_time_s: float, *, threads: int
) -> Latency:
    for _ in range(warmup):
        fn(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time_s:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return Latency.from_seconds(times, batch=len(x), threads=threads)


def interleaved_p50s(runnables: dict[str, Any], sample_shape: tuple[int, ...], *, batch: int,
                     rounds: int, **measure: Any) -> dict[str, list[float]]:
    """Every round's p50 (ms) of each runnable, timed in interleaved rounds.

    Each round times every runnable once with ``measure_latency(**measure)``; a
    burst of load from another process then hits all of them alike instead of
    whichever was being timed. Compare the medians of the rounds.
    """
    if rounds < 1:
        raise ConfigError(f"latency needs rounds >= 1, got {rounds}")
    p50s: dict[str, list[float]] = {name: [] for name in runnables}
    for _ in range(rounds):
        for name, runnable in runnables.items():
            p50s[name].append(
                measure_latency(runnable, sample_shape, batch=batch, **measure).p50_ms)
    return p50s
