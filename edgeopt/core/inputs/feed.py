"""A feed as the model takes it: raw images preprocessed, other arrays cast to the
declared dtype where no value changes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeopt.core.data import Preprocess
from edgeopt.core.errors import DataError
from edgeopt.core.inputs.specs import TensorLike


def prepare(
    feed: dict[str, np.ndarray],
    preprocess: Preprocess | None,
    *,
    inputs: Sequence[TensorLike] | None = None,
) -> dict[str, np.ndarray]:
    """Apply ``preprocess`` to raw uint8 images (rank 4); pass everything else as it is.

    With ``inputs``, an input the model itself declares uint8 is left raw, and
    without ``preprocess`` images are only cast to the declared dtype.
    """
    declared = {info.name: numpy_dtype(info, f"input {info.name!r}") for info in inputs or ()}
    out = {}
    for name, array in feed.items():
        want = declared.get(name)
        raw_image = array.dtype == np.uint8 and array.ndim == 4 and want != np.uint8
        if raw_image and preprocess is not None:
            array = preprocess(array)
        elif want is not None and array.dtype != want:
            array = cast(array, want, name)
        out[name] = array
    return out


def cast(array: np.ndarray, want: np.dtype, where: str) -> np.ndarray:
    """Casts that keep every value: safe casts, float64 data for float32 models, ints in range."""
    have = array.dtype
    if have == want:
        return array
    ok = np.can_cast(have, want, "safe")
    if not ok and have.kind == "f" and want.kind == "f":
        ok = True  # numpy saves float64 by default; precision, not meaning, is lost
    elif not ok and have.kind in "biu" and want.kind in "iu":
        # Compare as Python ints: a numpy round trip would hide uint64 -> int64 wrap-around.
        info = np.iinfo(want)
        ok = array.size == 0 or (info.min <= int(array.min()) and int(array.max()) <= info.max)
    elif not ok and have.kind in "biu" and want.kind == "f":
        ok = np.array_equal(array.astype(want).astype(have), array)  # exact in the float
    if not ok:
        values = f" with values {array.min()}..{array.max()}" if have.kind in "iu" else ""
        raise DataError(f"{where}: the model takes {want.name} but the data is {have.name}{values}")
    return array.astype(want)


def numpy_dtype(info: TensorLike, where: str) -> np.dtype:
    try:
        return np.dtype(info.dtype)
    except TypeError:
        raise DataError(
            f"{where}: the model takes {info.dtype}, which numpy data cannot hold"
        ) from None
