"""What a model declares about an input (name, dtype, shape), and the layout data
gives it: samples first, whichever axis the model batches on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class TensorLike(Protocol):
    """What is read from a model input: ``core.onnx_graph.TensorInfo`` has it."""

    name: str
    dtype: str  # numpy dtype name
    shape: Sequence[int | str | None]  # str/None: a dynamic dim


@dataclass(frozen=True)
class TensorSpec:
    """A stand-in for ``TensorInfo`` where no ONNX graph is at hand (tests, scripts)."""

    name: str
    dtype: str
    shape: list[int | str | None]


def batch_axis(shape: Sequence[int | str | None]) -> int | None:
    """The model's batch axis: its first dynamic dim, else axis 0 of a fixed shape;
    None for a scalar. silero-vad's state is ``[2, N, 128]``: axis 1."""
    if not shape:
        return None
    return next((i for i, d in enumerate(shape) if not is_fixed(d)), 0)


def data_shape(shape: Sequence[int | str | None]) -> list:
    """The model's shape as data holds it: the batch axis moved to the front."""
    shape = list(shape)
    axis = batch_axis(shape)
    return shape if axis is None else [shape[axis], *shape[:axis], *shape[axis + 1 :]]


def is_fixed(dim: Any) -> bool:
    return isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim >= 1


def fits_dim(have: int, dim: Any) -> bool:
    return not is_fixed(dim) or have == dim


def show_shape(shape: list) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"
