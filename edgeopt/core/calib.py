"""The calibration data protocol: any iterable of input batches, or one array.

An array (numpy or torch, N first) is subsampled with a seed so results are
reproducible; an iterable of batches is consumed in order until enough samples.
Inputs are already preprocessed (float, the model's layout).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from edgeopt.core.errors import DataError


def _as_tensor(batch) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch.float()
    if isinstance(batch, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    if isinstance(batch, (tuple, list)) and batch:
        return _as_tensor(batch[0])  # (x, y) pairs from a DataLoader: take x
    raise DataError(f"calibration batch of type {type(batch).__name__} is not an array")


def calibration_batches(
    data, *, size: int, seed: int = 0, batch_size: int = 64
) -> list[torch.Tensor]:
    """At most ``size`` samples from ``data`` as a list of float batches."""
    if data is None:
        raise DataError("calibration data is required (pass data=...)")
    if isinstance(data, (np.ndarray, torch.Tensor)):
        x = _as_tensor(data)
        if x.shape[0] == 0:
            raise DataError("calibration set is empty")
        idx = np.arange(x.shape[0])
        if x.shape[0] > size:
            idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], size, replace=False))
        x = x[torch.from_numpy(idx)]
        return list(torch.split(x, batch_size))
    if not isinstance(data, Iterable):
        raise DataError(f"calibration data of type {type(data).__name__} is not iterable")
    out, n = [], 0
    for batch in data:
        t = _as_tensor(batch)
        if n + t.shape[0] > size:
            t = t[: size - n]
        if t.shape[0]:
            out.append(t)
            n += t.shape[0]
        if n >= size:
            break
    if n == 0:
        raise DataError("calibration set is empty")
    return out
