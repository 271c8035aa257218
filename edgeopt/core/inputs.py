"""Data for models with any inputs: several named tensors of any dtype.

``core.data`` serves single-input image classifiers. This module serves the rest
(token ids + masks, recurrent state, scalars, detectors): arrays keyed by the
model's input names, checked against the model's declared dtypes and shapes
when loaded, so a mistake is one line naming the input rather than an ONNX
Runtime error deep inside an evaluation.

Sources: an ``.npz`` (one array per input name, optional ``y``; or
``NAME_train``/``NAME_test``; ``x`` stands for the only input of a one-input
model) or a folder of ``NAME.npy`` files (optionally in ``train/`` and
``test/``). Axis 0 of an array is its sample axis, whichever axis the model
batches on (``batch_axis``: silero-vad's state ``[2, N, 128]`` is given as
``(samples, 2, 128)``; the pipeline moves the axis). An input without a batch
axis (a 0-d ``sr``, or a fully fixed shape given whole beside batched inputs)
is a *constant*: fed as it is with every batch.

Pure numpy: the runtime side uses it without torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeopt.core.data import Preprocess, dataset_name, subset_indices
from edgeopt.core.data.splits import as_labels  # one label check for image and multi-input data
from edgeopt.core.errors import ConfigError, DataError

SPLITS = ("train", "test")
_UNNAMED = re.compile(r"dim\d+")


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


# --------------------------------------------------------------------------- containers


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
    declared = {info.name: _numpy_dtype(info, f"input {info.name!r}") for info in inputs or ()}
    out = {}
    for name, array in feed.items():
        want = declared.get(name)
        raw_image = array.dtype == np.uint8 and array.ndim == 4 and want != np.uint8
        if raw_image and preprocess is not None:
            array = preprocess(array)
        elif want is not None and array.dtype != want:
            array = _cast(array, want, name)
        out[name] = array
    return out


def batch_axis(shape: Sequence[int | str | None]) -> int | None:
    """The model's batch axis: its first dynamic dim, else axis 0 of a fixed shape;
    None for a scalar. silero-vad's state is ``[2, N, 128]``: axis 1."""
    if not shape:
        return None
    return next((i for i, d in enumerate(shape) if not _fixed(d)), 0)


def data_shape(shape: Sequence[int | str | None]) -> list:
    """The model's shape as data holds it: the batch axis moved to the front."""
    shape = list(shape)
    axis = batch_axis(shape)
    return shape if axis is None else [shape[axis], *shape[:axis], *shape[axis + 1 :]]


# --------------------------------------------------------------------------- loading


def load_inputs(
    spec: str, inputs: Sequence[TensorLike], *, seed: int = 0, test_fraction: float = 0.2
) -> InputDataset:
    """Load, check and split data for a model with these ``inputs``."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if not inputs:
        raise DataError("the model declares no inputs")
    path = Path(str(spec)).expanduser()
    if not path.exists():
        raise DataError(f"data not found: {spec} (expected an .npz file or a folder of .npy)")
    if path.is_file() and path.suffix.lower() != ".npz":
        raise DataError(f"{path}: unsupported data file (expected .npz or a folder of .npy)")
    arrays = _read_npz(path) if path.is_file() else _read_npy_folder(path)
    models = {info.name: info for info in inputs}
    groups = _group(arrays, models, path)

    if "train" in groups:
        train = _make_split(groups["train"], groups[""], models, path, "train")
        test = _make_split(groups["test"], groups[""], models, path, "test")
    else:
        train, test = _split(_make_split(groups[""], {}, models, path, ""), seed, test_fraction)
    for label, split in (("train", train), ("test", test)):
        if len(split) == 0:
            raise DataError(f"{path}: the {label} split is empty")
    labels = [s.y for s in (train, test) if s.y is not None and len(s.y)]
    num_classes = int(max(y.max() for y in labels)) + 1 if labels else None
    return InputDataset(dataset_name(str(spec)), train, test, num_classes)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read .npz ({exc})") from None
    with npz:
        return {key: _load_array(lambda k=key: npz[k], f"{path}:{key}") for key in npz.files}


def _read_npy_folder(root: Path) -> dict[str, np.ndarray]:
    """``NAME.npy`` at the top keyed ``NAME``; in ``train/``/``test/`` keyed ``NAME_train``..."""
    arrays = {p.stem: p for p in sorted(root.glob("*.npy"))}
    for split in SPLITS:
        arrays |= {f"{p.stem}_{split}": p for p in sorted((root / split).glob("*.npy"))}
    if not arrays:
        raise DataError(f"{root}: no .npy files (expected one NAME.npy per model input)")
    return {
        key: _load_array(lambda p=p: np.load(p, allow_pickle=False), str(p))
        for key, p in arrays.items()
    }


def _load_array(load, where: str) -> np.ndarray:
    try:
        return np.asarray(load())
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            # Unpickling runs arbitrary code, so object arrays are refused, never read.
            raise DataError(
                f"{where}: holds Python objects (pickled); save plain numeric arrays instead"
            ) from None
        raise DataError(f"{where}: cannot read array ({exc})") from None
    except OSError as exc:
        raise DataError(f"{where}: cannot read array ({exc})") from None


def _group(arrays: dict[str, np.ndarray], models: dict, path: Path) -> dict[str, dict]:
    """Sort keys into the unsplit group ``""`` and, if any key has a suffix, train/test."""
    names = set(models) | {"y"}
    alias = {"x": next(iter(models))} if len(models) == 1 and "x" not in models else {}
    groups: dict[str, dict] = {"": {}, "train": {}, "test": {}}
    for key, array in arrays.items():
        base, split = key, ""
        if key not in names and key not in alias:
            for s in SPLITS:
                if key.endswith(f"_{s}"):
                    base, split = key[: -len(s) - 1], s
        base = alias.get(base, base)
        if base not in names:
            expected = ", ".join(models)
            raise DataError(f"{path}: unknown array {key!r}; the model's inputs are: {expected}")
        groups[split][base] = array
    if not groups["train"] and not groups["test"]:
        return {"": groups[""]}
    if "y" in groups[""]:
        raise DataError(f"{path}: the inputs are split, so give labels as y_train and y_test")
    for s, other in (("train", "test"), ("test", "train")):
        for base in groups[s].keys() - groups[other].keys():
            raise DataError(f"{path}: {base}_{s} is given but {base}_{other} is not")
    return groups


def _make_split(
    arrays: dict[str, np.ndarray],
    shared: dict[str, np.ndarray],
    models: dict,
    path: Path,
    split: str,
) -> InputSplit:
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
    want = _numpy_dtype(info, where)
    # Raw uint8 images for a float input stay raw until prepare() preprocesses them.
    raw_image = array.dtype == np.uint8 and want.kind == "f" and array.ndim == 4
    if not raw_image:
        array = _cast(array, want, where)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise DataError(f"{where}: {bad} values are NaN or Inf")
    if not shape:
        if array.ndim:
            raise DataError(f"{where}: the model takes a scalar (shape ()), got {array.shape}")
        return array
    layout = data_shape(shape)
    fits = array.ndim == len(shape) and all(
        _fits(h, w) for h, w in zip(array.shape[1:], layout[1:])
    )
    if raw_image and not fits:  # raw images are NCHW; the model may take NHWC
        nchw = [layout[0], layout[3], layout[1], layout[2]]
        fits = all(_fits(h, w) for h, w in zip(array.shape[1:], nchw[1:]))
    if not fits:
        moved = "" if layout == shape else f", which data gives samples first as {_show(layout)}"
        raise DataError(f"{where}: the model takes {_show(shape)}{moved}; got {array.shape}")
    return array


def _cast(array: np.ndarray, want: np.dtype, where: str) -> np.ndarray:
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


def _is_constant(array: np.ndarray, info: TensorLike) -> bool:
    """No batch axis: a 0-d input, or a fully fixed shape that the array has whole."""
    shape = list(info.shape)
    return all(_fixed(d) for d in shape) and list(array.shape) == shape


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


def _split(split: InputSplit, seed: int, test_fraction: float) -> tuple[InputSplit, InputSplit]:
    # Same draw as data.split_train_test, so one seed splits image and multi-input data alike.
    n = len(split)
    if n < 2:
        raise DataError(f"need at least 2 samples to split into train and test, got {n}")
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    idx = np.random.default_rng(seed).permutation(n)
    return split._take(idx[n_test:]), split._take(idx[:n_test])


def _numpy_dtype(info: TensorLike, where: str) -> np.dtype:
    try:
        return np.dtype(info.dtype)
    except TypeError:
        raise DataError(
            f"{where}: the model takes {info.dtype}, which numpy data cannot hold"
        ) from None


def _fixed(dim: Any) -> bool:
    return isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim >= 1


def _fits(have: int, dim: Any) -> bool:
    return not _fixed(dim) or have == dim


def _show(shape: list) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"
