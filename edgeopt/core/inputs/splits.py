"""Model-keyed samples in memory: ``InputSplit`` and ``InputDataset``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from edgeopt.core.data import subset_indices
from edgeopt.core.data.splits import train_test_indices
from edgeopt.core.errors import ConfigError, DataError


@dataclass
class InputSplit:
    inputs: dict[str, np.ndarray]  # samples along axis 0
    constants: dict[str, np.ndarray] = field(default_factory=dict)  # fed whole every batch
    y: np.ndarray | None = None  # int64 labels, one per sample

    def __post_init__(self) -> None:
        if not self.inputs:
            raise DataError("no input has a sample axis, so there is nothing to iterate over")
        counts = {name: len(a) for name, a in self.inputs.items()}
        if self.y is not None:
            counts["y"] = len(self.y)
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"{name} has {n}" for name, n in counts.items())
            raise DataError(f"inputs disagree on the number of samples: {listed}")

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def subset(self, n: int | None, *, seed: int = 0) -> InputSplit:
        """Same draw as ``data.Split.subset`` (``data.subset_indices``)."""
        idx = subset_indices(len(self), n, seed)
        return self if idx is None else self._take(idx)

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of ``batch_size`` samples (the last may be short), constants included."""
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            feed = {k: a[start : start + batch_size] for k, a in self.inputs.items()}
            yield {**feed, **self.constants}

    def _take(self, idx: np.ndarray) -> InputSplit:
        return InputSplit(
            {k: a[idx] for k, a in self.inputs.items()},
            dict(self.constants),
            None if self.y is None else self.y[idx],
        )


@dataclass
class InputDataset:
    name: str
    train: InputSplit
    test: InputSplit
    num_classes: int | None  # from integer labels; None without labels


def split_train_test(split: InputSplit, seed: int, test_fraction: float,
                     where: str = "data") -> tuple[InputSplit, InputSplit]:
    """The draw ``data.split_train_test`` makes, so one seed splits image and multi-input
    data alike."""
    train, test = train_test_indices(len(split), seed, test_fraction, where)
    return split._take(train), split._take(test)
