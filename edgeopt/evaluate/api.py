"""``edgeopt.evaluate(runnable, data, metrics=...)``: the one-call form."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeopt.core.data import Dataset, Preprocess, Split, load_dataset
from edgeopt.core.errors import ConfigError
from edgeopt.evaluate.evaluate import EvalResult, evaluate

METRICS = ("top1", "top5", "agreement")


def evaluate_on(runnable, data, *, metrics: Sequence[str] = ("top1", "top5"), preprocess=None,
                reference=None, batch_size: int = 256, progress: bool = True) -> dict[str, float]:
    """Evaluate ``runnable`` on ``data`` and return the asked-for metrics.

    ``data``: a dataset spec or ``Dataset`` (its test split is used), a
    ``Split``, or an ``(x, y)`` pair. ``reference``: a runnable whose top-1
    predictions the ``agreement`` metric compares against. ``preprocess``
    defaults to the data-loading default (uint8 pixels / 255).
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r} (valid: {', '.join(METRICS)})")
    if isinstance(data, str):
        data = load_dataset(data)
    if isinstance(data, Dataset):
        data = data.test
    x, y = (data.x, data.y) if isinstance(data, Split) else data
    preprocess = preprocess if preprocess is not None else Preprocess()
    ref_logits = None
    if "agreement" in metrics:
        if reference is None:
            raise ConfigError("the agreement metric needs reference=<runnable>")
        ref_logits = evaluate(reference, x, y, preprocess=preprocess, batch_size=batch_size,
                              progress=progress, desc="reference").logits
    res: EvalResult = evaluate(runnable, x, np.asarray(y), preprocess=preprocess,
                               reference_logits=ref_logits, batch_size=batch_size,
                               progress=progress)
    out = {"n": res.n}
    for m in metrics:
        out[m] = getattr(res, m)
    return out
