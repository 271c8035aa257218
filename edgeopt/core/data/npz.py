"""An ``.npz`` dataset: ``x``/``y``, or ``x_train``/``y_train``/``x_test``/``y_test``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeopt.core.data.splits import Split, as_labels, split_train_test
from edgeopt.core.errors import DataError, first_line


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    # bool, integer or float: strings, dates, complex numbers and records are no pixels,
    # and would fail far from here (in Preprocess, or in a model's first layer).
    if x.dtype.kind not in "buif":
        raise DataError(f"{where}: samples must be numbers, got dtype {x.dtype}")
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim != 4:
        raise DataError(f"{where}: expected samples of shape N,H,W or N,C,H,W, got {x.shape}")
    # Channels-last arrays (images saved from PIL/TF) have 1 or 3 in the last axis.
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


SAMPLE_LIMIT = 1_000_000  # elements; larger arrays are checked on an evenly strided sample


def check_values(x: np.ndarray, where: str) -> None:
    """Refuse NaN/Inf and all-constant samples, naming ``where`` (file:array).

    Arrays over ``SAMPLE_LIMIT`` elements are checked on a strided sample, and the
    message says so when the sample is what found the problem.
    """
    if not np.issubdtype(x.dtype, np.number) or x.size == 0:
        return
    flat = x.reshape(-1)
    sampled = flat.size > SAMPLE_LIMIT
    if sampled:
        flat = flat[:: flat.size // SAMPLE_LIMIT + 1]
    note = f" (checked a sample of {flat.size} of {x.size} values)" if sampled else ""
    if np.issubdtype(flat.dtype, np.floating) and not np.isfinite(flat).all():
        bad = "NaN" if np.isnan(flat).any() else "Inf"
        raise DataError(f"{where}: samples contain {bad} values{note}")
    if flat.size > 1 and flat.min() == flat.max():
        raise DataError(f"{where}: every sample value is {flat[0].item()!r} (constant data{note})")


def load_npz(path: Path, seed: int, test_fraction: float) -> tuple[Split, Split]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - see below
        # A damaged archive raises whatever the layer that noticed raises: BadZipFile,
        # EOFError, zlib.error, NotImplementedError (an unknown compression method),
        # ValueError from the .npy header, MemoryError for a header claiming terabytes.
        raise DataError(f"{path}: cannot read .npz ({first_line(exc)})") from None

    def pair(xk: str, yk: str) -> tuple[np.ndarray, np.ndarray]:
        x = _to_nchw(arrays[xk], f"{path}:{xk}")
        y = as_labels(arrays[yk], f"{path}:{yk}")
        if len(x) != len(y):
            raise DataError(f"{path}: {xk} has {len(x)} samples but {yk} has {len(y)} labels")
        check_values(x, f"{path}:{xk}")
        return x, y

    split_keys = {"x_train", "y_train", "x_test", "y_test"}
    if split_keys <= arrays.keys():
        return Split(*pair("x_train", "y_train")), Split(*pair("x_test", "y_test"))
    if {"x", "y"} <= arrays.keys():
        return split_train_test(*pair("x", "y"), seed, test_fraction, where=str(path))
    raise DataError(
        f"{path}: expected arrays x and y (or x_train, y_train, x_test, y_test), "
        f"found {', '.join(sorted(arrays)) or 'none'}"
    )
