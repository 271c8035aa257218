"""Arrays checked against the model's inputs (dtype, shape, shared dynamic dims) and
sorted into samples and constants."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgeopt.core.data.splits import as_labels  # one label check for image and multi-input data
from edgeopt.core.errors import DataError
from edgeopt.core.inputs.feed import cast, numpy_dtype
from edgeopt.core.inputs.specs import TensorLike, data_shape, fits_dim, is_fixed, show_shape
from edgeopt.core.inputs.splits import InputSplit

_UNNAMED = re.compile(r"dim\d+")


def make_split(
    arrays: dict[str, np.ndarray],
    shared: dict[str, np.ndarray],
    models: dict,
    path: Path,
    split: str,
) -> InputSplit:
    """One split's ``arrays``, with the unsplit ``shared`` ones beside them, checked
    against the model's inputs (``models``: name -> TensorLike)."""
    where = f"{path}" + (f" ({split})" if split else "")
    arrays = {**shared, **arrays}
    missing = [name for name in models if name not in arrays]
    if missing:
        raise DataError(
            f"{where}: no data for input {missing[0]!r} "
            f"(the model's inputs are: {', '.join(models)})"
        )
    checked = {name: _check(arrays[name], models[name], where) for name in models}
    constant = {name for name, a in checked.items() if _is_constant(a, models[name])}
    # A fixed-shape array could be one sample or a constant; it is a constant only
    # when some other input carries the samples.
    if not constant < set(checked):
        constant = {name for name in constant if np.ndim(checked[name]) == 0}
    for name in shared.keys() & (set(checked) - constant):
        raise DataError(
            f"{where}: input {name!r} has samples, so give it as "
            f"{name}_train and {name}_test like the other inputs"
        )
    samples = {k: a for k, a in checked.items() if k not in constant}
    _check_dynamic_dims(samples, models, where)
    y = arrays.get("y")
    y = None if y is None else as_labels(y, f"{where}: y")
    try:
        return InputSplit(samples, {k: checked[k] for k in constant}, y)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None


def _check(array: np.ndarray, info: TensorLike, where: str) -> np.ndarray:
    name, shape = info.name, list(info.shape)
    where = f"{where}: input {name!r}"
    want = numpy_dtype(info, where)
    # Raw uint8 images for a float input stay raw until prepare() preprocesses them.
    raw_image = array.dtype == np.uint8 and want.kind == "f" and array.ndim == 4
    if not raw_image:
        array = cast(array, want, where)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise DataError(f"{where}: {bad} values are NaN or Inf")
    if not shape:
        if array.ndim:
            raise DataError(f"{where}: the model takes a scalar (shape ()), got {array.shape}")
        return array
    layout = data_shape(shape)
    fits = array.ndim == len(shape) and all(
        fits_dim(h, w) for h, w in zip(array.shape[1:], layout[1:])
    )
    if raw_image and not fits:  # raw images are NCHW; the model may take NHWC
        nchw = [layout[0], layout[3], layout[1], layout[2]]
        fits = all(fits_dim(h, w) for h, w in zip(array.shape[1:], nchw[1:]))
    if not fits:
        moved = "" if layout == shape else f", which data gives samples first as {show_shape(layout)}"
        raise DataError(f"{where}: the model takes {show_shape(shape)}{moved}; got {array.shape}")
    return array


def _is_constant(array: np.ndarray, info: TensorLike) -> bool:
    """No batch axis: a 0-d input, or a fully fixed shape that the array has whole."""
    shape = list(info.shape)
    return all(is_fixed(d) for d in shape) and list(array.shape) == shape


def _check_dynamic_dims(samples: dict[str, np.ndarray], models: dict, where: str) -> None:
    """A dynamic dim name used by two inputs (``seq`` in ids and mask) has one size."""
    layouts = {name: data_shape(list(models[name].shape)) for name in samples}
    batch = {layout[0] for layout in layouts.values()}
    seen: dict[str, tuple[int, str]] = {}
    for name, array in samples.items():
        for size, dim in zip(array.shape[1:], layouts[name][1:]):
            # onnx_graph names unnamed dims "dim<i>": equal names there mean nothing.
            if not isinstance(dim, str) or dim in batch or _UNNAMED.fullmatch(dim):
                continue
            first = seen.setdefault(dim, (size, name))
            if first[0] != size:
                raise DataError(
                    f"{where}: input {name!r} has {dim}={size} but input "
                    f"{first[1]!r} has {dim}={first[0]}"
                )
