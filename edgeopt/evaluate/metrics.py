"""Classification metrics on logits, as percentages (0..100)."""

from __future__ import annotations

import numpy as np

from edgeopt.core.errors import DataError


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percent of rows whose label is among the ``k`` highest logits.

    Ties go to the lower class index, exactly like ``argmax``: quantized models
    produce tied logits often, and counting a tie as a hit would flatter them.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise DataError(f"expected logits of shape (N, classes), got {logits.shape}")
    if labels.shape != (logits.shape[0],):
        raise DataError(
            f"{labels.shape[0] if labels.ndim else 0} labels for {logits.shape[0]} predictions"
        )
    if logits.shape[0] == 0:
        raise DataError("cannot compute accuracy on 0 samples")
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k={k} is outside 1..{logits.shape[1]} (number of classes)")
    if k == 1:
        hits = logits.argmax(axis=1) == labels
    else:
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        hits = (top == labels[:, None]).any(axis=1)
    return float(hits.mean() * 100.0)


def agreement(pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Percent of samples where both give the same top-1 class.

    Each argument is either class ids ``(N,)`` or logits ``(N, classes)``.
    """
    a, b = _classes(pred_a), _classes(pred_b)
    if a.shape != b.shape:
        raise DataError(f"cannot compare {a.shape[0]} predictions with {b.shape[0]}")
    if a.shape[0] == 0:
        raise DataError("cannot compute agreement on 0 samples")
    return float((a == b).mean() * 100.0)


def _classes(pred: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.ndim == 2:
        return pred.argmax(axis=1)
    if pred.ndim == 1:
        return pred
    raise DataError(f"expected class ids (N,) or logits (N, classes), got {pred.shape}")
