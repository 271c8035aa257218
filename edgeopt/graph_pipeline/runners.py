"""The stages the graph path compares: an ONNX Runtime session or an artifact's Predictor
fed by input name, its outputs collected over the data, and its latency."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgeopt.compile.backends.onnxruntime.runtime import make_session
from edgeopt.core.errors import ConfigError
from edgeopt.core.inputs import batch_axis
from edgeopt.evaluate.latency import Latency


@dataclass
class GraphRunner:
    """One stage: an ONNX Runtime session (a Predictor or a raw session) fed by name."""

    name: str
    run: Callable[[dict], list[np.ndarray]]
    output_names: list[str]
    backend: str = "onnxruntime"
    precision: str = "fp32"
    size: int | None = None
    notes: str = ""
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


def session_runner(name: str, model: str | bytes, output_names, *, threads: int | None,
                   **kw) -> GraphRunner:
    sess = make_session(model, threads)
    names = [o.name for o in sess.get_outputs()]
    bad = [n for n in output_names if n not in names]
    if bad:
        raise ConfigError(f"{name}: output {bad[0]!r} is not among the session's {names}")
    # A graph with bound inputs no longer takes them: feed only what the session has.
    takes = {i.name for i in sess.get_inputs()}
    return GraphRunner(name, lambda feed: sess.run(
        list(output_names), {k: v for k, v in feed.items() if k in takes}),
        list(output_names), **kw)


def predictor_runner(name: str, pred, output_names, **kw) -> GraphRunner:
    def run(feed):
        out = pred.run(feed)
        return [out] if not isinstance(out, dict) else [out[n] for n in output_names]

    return GraphRunner(name, run, list(output_names), **kw)


def collect(runner: GraphRunner, feeds: list[tuple[dict, int, int]], outputs, *,
            progress: bool = False):
    """Run every (feed, batch, real samples); each output's batches joined along its sample
    axis (moved to 0), without the rows that only pad a static batch."""
    from tqdm.auto import tqdm

    declared = {o.name: list(o.shape) for o in outputs}
    parts: dict[str, list[np.ndarray]] = {n: [] for n in runner.output_names}
    for feed, n, real in tqdm(feeds, desc=runner.name, unit="batch",
                              disable=None if progress else True):
        for name, value in zip(runner.output_names, runner.run(feed)):
            value = np.asarray(value)
            if value.ndim == 0:
                value = value[None]
            else:
                value = np.moveaxis(value, _output_axis(value, declared.get(name), n), 0)[:real]
            parts[name].append(value)
    runner.outputs = {k: np.concatenate(v) for k, v in parts.items()}
    return runner.outputs


def _output_axis(value: np.ndarray, declared: list | None, batch: int) -> int:
    """Where a batch of ``batch`` samples sits in an output: its declared dynamic dim
    when that dim has the batch's size, else the first axis that does (stateN)."""
    if declared and len(declared) == value.ndim:
        axis = batch_axis(declared)
        if axis is not None and value.shape[axis] == batch:
            return axis
    for i, n in enumerate(value.shape):
        if n == batch:
            return i
    return 0


def time_interleaved(runners: list[GraphRunner], feed: dict, *, batch: int, rounds: int,
                     repeats: int, warmup: int = 3, threads: int = 1) -> dict[str, Latency]:
    """p50/p90 per runner on the same feed, in interleaved rounds: load from another
    process then hits every stage alike instead of whichever was being timed."""
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    for r in runners:
        for _ in range(warmup):
            r.run(feed)
    for _ in range(max(1, rounds)):
        for r in runners:
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                r.run(feed)
                times[r.name].append(time.perf_counter() - t0)
    return {name: Latency.from_seconds(ts, batch=batch, threads=threads)
            for name, ts in times.items()}
