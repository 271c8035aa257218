"""``load_inputs``: an ``.npz`` or a folder of ``.npy`` read, its arrays keyed by input
and split, then checked (``check``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeopt.core.data import dataset_name
from edgeopt.core.data.splits import check_fraction
from edgeopt.core.errors import DataError, first_line
from edgeopt.core.inputs.check import make_split
from edgeopt.core.inputs.specs import TensorLike
from edgeopt.core.inputs.splits import InputDataset, split_train_test

SPLITS = ("train", "test")


def load_inputs(
    spec: str, inputs: Sequence[TensorLike], *, seed: int = 0, test_fraction: float = 0.2
) -> InputDataset:
    """Load, check and split data for a model with these ``inputs``."""
    check_fraction(test_fraction)
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
        train = make_split(groups["train"], groups[""], models, path, "train")
        test = make_split(groups["test"], groups[""], models, path, "test")
    else:
        whole = make_split(groups[""], {}, models, path, "")
        train, test = split_train_test(whole, seed, test_fraction, str(path))
    for label, split in (("train", train), ("test", test)):
        if len(split) == 0:
            raise DataError(f"{path}: the {label} split is empty")
    labels = [s.y for s in (train, test) if s.y is not None and len(s.y)]
    num_classes = int(max(y.max() for y in labels)) + 1 if labels else None
    return InputDataset(dataset_name(str(spec)), train, test, num_classes)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - BadZipFile, EOFError, ValueError, ... (_load_array)
        raise DataError(f"{path}: cannot read .npz ({first_line(exc)})") from None
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
        raise DataError(f"{where}: cannot read array ({first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file raises what its layer raises:
        # BadZipFile, zlib.error, EOFError, tokenize.TokenError (numpy parses the .npy
        # header as Python tokens), NotImplementedError (an unknown zip compression).
        raise DataError(f"{where}: cannot read array ({first_line(exc)})") from None


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
