"""Samples held in memory: ``Split`` and ``Dataset``, and the seeded draws that subset
and split them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edgeopt.core.errors import ConfigError, DataError


@dataclass
class Split:
    x: np.ndarray  # raw N,C,H,W
    y: np.ndarray  # int64 N

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DataError(f"{len(self.x)} samples but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int | None, *, seed: int = 0) -> Split:
        """``n`` samples drawn without replacement (``subset_indices``)."""
        idx = subset_indices(len(self), n, seed)
        return self if idx is None else Split(self.x[idx], self.y[idx])


def subset_indices(length: int, n: int | None, seed: int) -> np.ndarray | None:
    """Indices of ``n`` of ``length`` samples drawn without replacement, or None for all
    of them; the same seed gives the same draw, and a smaller ``n`` gives a prefix of a
    larger one (image and multi-input data draw alike)."""
    if n is None or n >= length:
        return None
    if n < 0:
        raise ConfigError(f"subset size must be >= 0, got {n}")
    return np.random.default_rng(seed).permutation(length)[:n]


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def iter_batches(x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]



def train_test_indices(n: int, seed: int, test_fraction: float,
                       where: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of ``n`` samples split by ``seed``; image and multi-input
    data split alike. ``where`` names the source in the error for too few samples."""
    if n < 2:
        raise DataError(f"{where}: need at least 2 samples to split into train and test, "
                        f"got {n}")
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    idx = np.random.default_rng(seed).permutation(n)
    return idx[n_test:], idx[:n_test]


def split_train_test(x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float,
                     where: str = "data") -> tuple[Split, Split]:
    train, test = train_test_indices(len(y), seed, test_fraction, where)
    return Split(x[train], y[train]), Split(x[test], y[test])


def as_labels(y: np.ndarray, where: str) -> np.ndarray:
    """``y`` as int64 labels; a one-line ``DataError`` naming ``where`` if it cannot be."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be 1-D, got shape {y.shape}")
    # Whole floats within int32 are class indices; Inf, NaN and 1e300 are none (and would
    # warn in np.mod, or wrap to a negative int64).
    if (y.dtype.kind == "f" and np.all(np.abs(y.astype(np.float64)) < 2**31)
            and np.all(np.mod(y, 1) == 0)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, found {int(y.min())}")
    return y.astype(np.int64)


def check_fraction(test_fraction: float) -> None:
    """The one check of a ``test_fraction`` argument, for every loader that splits."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction}")
