"""Running a model that only takes some batch sizes on any batch.

A torch.export program exported at batch 1 (or with a batch range such as 2..100)
refuses other batches, and so may the artifact compiled from it. ``Chunked`` splits
a batch into chunks of at most ``max_batch`` rows and pads a short chunk up to
``min_batch`` by repeating its last row, dropping the padded rows' outputs; so
evaluation and latency run every stage in batches it takes, in this one place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.core.errors import ConfigError
from edgeopt.evaluate.runnable import as_numpy_fn, describe, is_torch_module


class Chunked:
    """A runnable (``.run(x)``) running ``inner`` in chunks of ``min_batch..max_batch`` rows."""

    def __init__(self, inner: Any, *, min_batch: int = 1, max_batch: int | None = None) -> None:
        if min_batch < 1 or (max_batch is not None and max_batch < min_batch):
            raise ConfigError(f"batch range must satisfy 1 <= min <= max, got "
                              f"{min_batch}..{max_batch}")
        self.inner, self.min_batch, self.max_batch = inner, min_batch, max_batch
        self.backend = describe(inner)
        self.threads = getattr(inner, "threads", None)  # a Predictor's fixed thread count
        self._fn = as_numpy_fn(inner)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        step = self.max_batch or max(len(x), self.min_batch)
        outputs = []
        for start in range(0, len(x), step):
            chunk = x[start:start + step]
            rows = len(chunk)
            if rows < self.min_batch:
                pad = np.repeat(chunk[-1:], self.min_batch - rows, axis=0)
                chunk = np.concatenate([chunk, pad])
            outputs.append(np.asarray(self._fn(chunk))[:rows])
        return np.concatenate(outputs)

    __call__ = run


def chunked(runnable: Any, batch_range: tuple[int, int | None] | None, *,
            largest: int | None = None) -> Any:
    """``runnable`` wrapped in ``Chunked`` when ``batch_range`` (min, max) restricts the
    batches it takes below ``largest`` (None: any batch); else ``runnable`` itself."""
    if batch_range is None:
        return runnable
    lo, hi = batch_range
    if lo <= 1 and (hi is None or (largest is not None and hi >= largest)):
        return runnable
    return Chunked(runnable, min_batch=lo, max_batch=hi)


def program_chunked(runnable: Any, largest: int) -> Any:
    """A torch.export program (``ep.module()``) run in chunks of the batches it declares,
    whoever evaluates or times it; any other runnable as it is."""
    if not is_torch_module(runnable):
        return runnable
    # core.graph imports torch: evaluating a Predictor or a numpy callable must not need it.
    from edgeopt.core.graph import batch_range

    return chunked(runnable, batch_range(runnable), largest=largest)


def unchunked(runnable: Any) -> Any:
    """What a ``Chunked`` runs (to ask whether it is a torch module); else ``runnable``."""
    return runnable.inner if isinstance(runnable, Chunked) else runnable


def batch_sizes(wanted: list[int], batch_range: tuple[int, int | None] | None) -> list[int]:
    """The batch sizes to time: each wanted size moved into ``batch_range``, so that a
    static-batch model is timed at its own batch."""
    if batch_range is None:
        return sorted(set(wanted))
    lo, hi = batch_range
    return sorted({max(lo, b) if hi is None else min(max(lo, b), hi) for b in wanted})
