"""``load_dataset``: a dataset by name or path, dispatched to its format's reader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgeopt.core.data.idx import find_idx, load_idx_folder
from edgeopt.core.data.images import load_image_tree
from edgeopt.core.data.npz import load_npz
from edgeopt.core.data.splits import Dataset, Split, check_fraction, split_train_test
from edgeopt.core.data.text import TEXT_BUILTINS, TEXT_SUFFIXES, is_text_spec
from edgeopt.core.errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
BUILTINS = ("digits", "fashion-mnist")


def load_dataset(spec: str, *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Load a dataset; sources without their own test split are split by ``seed``."""
    check_fraction(test_fraction)
    spec = str(spec)
    if is_text_spec(spec):
        # Texts are not N,C,H,W samples: see core.data.text for why they have their own type.
        raise DataError(
            f"{spec}: text data, read by load_text_dataset "
            "(load_dataset reads images: IDX or class folders, .npz)"
        )
    name = dataset_name(spec)
    if spec == "fashion-mnist":
        root = Path(os.environ.get("EDGEOPT_FASHION_MNIST", FASHION_MNIST_DIR))
        if not root.is_dir():
            raise DataError(
                f"fashion-mnist not found at {root}; "
                "install it with: apt-get install dataset-fashion-mnist"
            )
        return _finish("fashion-mnist", *load_idx_folder(root))
    if spec == "digits":
        return _finish("digits", *split_train_test(*_load_digits(), seed, test_fraction))

    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(
            f"dataset not found: {spec} (expected a folder, an .npz file, "
            f"or one of: {', '.join(BUILTINS + TEXT_BUILTINS)})"
        )
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(f"{path}: unsupported dataset file (expected .npz or a folder)")
        return _finish(name, *load_npz(path, seed, test_fraction), where=str(path))
    if find_idx(path, "train", "images") or find_idx(path, "t10k", "images"):
        return _finish(name, *load_idx_folder(path), where=str(path))
    return _finish(name, *load_image_tree(path, seed, test_fraction), where=str(path))


def dataset_name(spec: str) -> str:
    """The name ``load_dataset(spec)`` gives its result, known without loading it."""
    if spec in BUILTINS or spec in TEXT_BUILTINS:
        return spec
    path = Path(spec).expanduser().resolve()  # resolve so "." gets the folder's name
    return path.stem if path.suffix.lower() in (".npz", *TEXT_SUFFIXES) else path.name


def _finish(name: str, train: Split, test: Split, num_classes: int | None = None, *,
            where: str | None = None) -> Dataset:
    """The Dataset, checked; errors name ``where`` (the file or folder) or else ``name``."""
    where = where or name
    for label, split in (("train", train), ("test", test)):
        if len(split) == 0:
            raise DataError(f"{where}: the {label} split is empty")
    if train.x.shape[1:] != test.x.shape[1:]:
        raise DataError(
            f"{where}: train samples have shape {train.x.shape[1:]} "
            f"but test samples have {test.x.shape[1:]}"
        )
    if num_classes is None:
        num_classes = int(max(train.y.max(), test.y.max())) + 1
    return Dataset(name=name, train=train, test=test, num_classes=num_classes)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Values are 0..16 counts; stretch to pixel range so the default 1/255 scale fits.
    x = np.rint(digits.images * 255.0 / 16.0).astype(np.uint8)[:, None, :, :]
    return x, digits.target.astype(np.int64)
