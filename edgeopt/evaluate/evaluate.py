"""Run a runnable over a labelled dataset and score it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from edgeopt.core.errors import ConfigError, DataError
from edgeopt.evaluate.chunked import program_chunked
from edgeopt.evaluate.metrics import agreement, topk_accuracy
from edgeopt.evaluate.runnable import as_numpy_fn


@dataclass
class EvalResult:
    n: int
    top1: float
    top5: float | None  # None when the task has fewer than 5 classes
    agreement: float | None  # vs reference_logits, None when none was given
    logits: np.ndarray = dataclasses.field(repr=False)  # (N, classes) float32

    def to_dict(self) -> dict[str, Any]:
        """Scores only: logits are too big for a report."""
        return {"n": self.n, "top1": self.top1, "top5": self.top5, "agreement": self.agreement}


def evaluate(
    runnable: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    reference_logits: np.ndarray | None = None,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "evaluate",
) -> EvalResult:
    """Top-1/top-5 accuracy of ``runnable`` on raw samples ``x`` with labels ``y``.

    ``preprocess`` maps a raw batch to the float32 model input; it is applied
    batch by batch so a large uint8 dataset is never expanded to float at once.
    """
    y = np.asarray(y, dtype=np.int64)
    n = len(x)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if n == 0:
        raise DataError("cannot evaluate on 0 samples")
    if y.shape != (n,):
        raise DataError(f"{n} samples but labels of shape {y.shape}")
    if reference_logits is not None and len(reference_logits) != n:
        raise DataError(f"{n} samples but {len(reference_logits)} reference logits")

    fn = as_numpy_fn(program_chunked(runnable, batch_size))
    outputs = []
    # disable=None lets tqdm hide the bar when stderr is not a terminal (CI, pipes).
    with tqdm(total=n, desc=desc, unit="sample", disable=None if progress else True) as bar:
        for start in range(0, n, batch_size):
            batch = x[start : start + batch_size]
            inputs = preprocess(batch) if preprocess is not None else batch
            out = np.asarray(fn(np.asarray(inputs, dtype=np.float32)))
            if out.ndim != 2 or out.shape[0] != len(batch):
                raise DataError(
                    f"model returned shape {out.shape} for a batch of {len(batch)}; "
                    "expected (batch, classes) logits"
                )
            outputs.append(out.astype(np.float32, copy=False))
            bar.update(len(batch))

    logits = np.concatenate(outputs)
    return EvalResult(
        n=n,
        top1=topk_accuracy(logits, y, 1),
        top5=topk_accuracy(logits, y, 5) if logits.shape[1] >= 5 else None,
        agreement=None if reference_logits is None else agreement(logits, reference_logits),
        logits=logits,
    )
