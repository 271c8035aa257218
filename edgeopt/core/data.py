"""Datasets and preprocessing.

A dataset is raw samples (``N,C,H,W``, uint8 where the source is pixels) plus
int64 labels, split into train and test. ``Preprocess`` turns raw samples into
the float32 tensors a model sees; the same object is recorded in artifacts so
that evaluation and deployment preprocess identically.

``load_dataset`` accepts a built-in name (``fashion-mnist``, ``digits``), a
folder of IDX files (MNIST naming), an ``.npz`` with ``x``/``y`` or
``x_train``/``y_train``/``x_test``/``y_test``, or a class-per-folder image tree.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeopt.core.config import Config
from edgeopt.core.errors import ConfigError, DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
BUILTINS = ("digits", "fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True, kw_only=True)
class Preprocess(Config):
    """``(raw * scale - mean) / std`` per channel, as float32 in ``layout``.

    Input is always raw ``N,C,H,W``; ``layout="NHWC"`` only changes the output.
    """

    scale: float = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        # YAML gives lists; keep tuples so the config stays hashable and frozen.
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if not self.scale > 0:
            raise ConfigError(f"Preprocess.scale must be > 0, got {self.scale!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"Preprocess.layout must be NCHW or NHWC, got {self.layout!r}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ConfigError(f"Preprocess.std must be > 0 per channel, got {self.std!r}")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ConfigError(
                f"Preprocess: mean has {len(self.mean)} values but std has {len(self.std)}"
            )

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw)
        if raw.ndim != 4:
            raise DataError(f"preprocess expects raw samples of shape N,C,H,W, got {raw.shape}")
        channels = raw.shape[1]
        x = raw.astype(np.float32) * np.float32(self.scale)
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is None:
                continue
            if len(values) != channels:
                raise DataError(
                    f"preprocess {name} has {len(values)} values but the data has "
                    f"{channels} channels (shape {raw.shape})"
                )
            per_channel = np.asarray(values, dtype=np.float32).reshape(1, channels, 1, 1)
            x = x - per_channel if name == "mean" else x / per_channel
        if self.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x, dtype=np.float32)


# --------------------------------------------------------------------------- containers


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


# --------------------------------------------------------------------------- loading


def load_dataset(spec: str, *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Load a dataset; sources without their own test split are split by ``seed``."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    spec = str(spec)
    name = dataset_name(spec)
    if spec == "fashion-mnist":
        root = Path(os.environ.get("EDGEOPT_FASHION_MNIST", FASHION_MNIST_DIR))
        if not root.is_dir():
            raise DataError(
                f"fashion-mnist not found at {root}; "
                "install it with: apt-get install dataset-fashion-mnist"
            )
        return _finish("fashion-mnist", *_load_idx_folder(root))
    if spec == "digits":
        return _finish("digits", *_split(*_load_digits(), seed, test_fraction))

    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(
            f"dataset not found: {spec} (expected a folder, an .npz file, "
            f"or one of: {', '.join(BUILTINS)})"
        )
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(f"{path}: unsupported dataset file (expected .npz or a folder)")
        return _finish(name, *_load_npz(path, seed, test_fraction))
    if _find_idx(path, "train", "images") or _find_idx(path, "t10k", "images"):
        return _finish(name, *_load_idx_folder(path))
    return _finish(name, *_load_image_tree(path, seed, test_fraction))


def dataset_name(spec: str) -> str:
    """The name ``load_dataset(spec)`` gives its result, known without loading it."""
    if spec in BUILTINS:
        return spec
    path = Path(spec).expanduser().resolve()  # resolve so "." gets the folder's name
    return path.stem if path.suffix.lower() == ".npz" else path.name


def _finish(name: str, train: Split, test: Split, num_classes: int | None = None) -> Dataset:
    for label, split in (("train", train), ("test", test)):
        if len(split) == 0:
            raise DataError(f"{name}: the {label} split is empty")
    if train.x.shape[1:] != test.x.shape[1:]:
        raise DataError(
            f"{name}: train samples have shape {train.x.shape[1:]} "
            f"but test samples have {test.x.shape[1:]}"
        )
    if num_classes is None:
        num_classes = int(max(train.y.max(), test.y.max())) + 1
    return Dataset(name=name, train=train, test=test, num_classes=num_classes)


def _split(x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float) -> tuple[Split, Split]:
    if len(y) < 2:
        raise DataError(f"need at least 2 samples to split into train and test, got {len(y)}")
    n_test = min(len(y) - 1, max(1, round(len(y) * test_fraction)))
    idx = np.random.default_rng(seed).permutation(len(y))
    test, train = idx[:n_test], idx[n_test:]
    return Split(x[train], y[train]), Split(x[test], y[test])


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be 1-D, got shape {y.shape}")
    if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, found {int(y.min())}")
    return y.astype(np.int64)


# --------------------------------------------------------------------------- digits


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Values are 0..16 counts; stretch to pixel range so the default 1/255 scale fits.
    x = np.rint(digits.images * 255.0 / 16.0).astype(np.uint8)[:, None, :, :]
    return x, digits.target.astype(np.int64)


# --------------------------------------------------------------------------- IDX

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _find_idx(root: Path, prefix: str, kind: str) -> Path | None:
    ndim = 3 if kind == "images" else 1
    for sep in ("-", "."):
        for ext in ("", ".gz"):
            candidate = root / f"{prefix}-{kind}{sep}idx{ndim}-ubyte{ext}"
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse one IDX file (optionally gzipped), checking magic number and size."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    if data[3] != ndim:
        raise DataError(f"{path}: expected an IDX file with {ndim} dimensions, got {data[3]}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: IDX header is truncated")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[data[2]]
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{path}: IDX size mismatch, header says {dims} ({expected} bytes) "
            f"but the file has {len(data)} bytes"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(dims)
        .astype(dtype.newbyteorder("="))
    )


def _load_idx_split(root: Path, prefix: str) -> Split:
    images = _find_idx(root, prefix, "images")
    labels = _find_idx(root, prefix, "labels")
    for found, kind, ndim in ((images, "images", 3), (labels, "labels", 1)):
        if found is None:
            raise DataError(f"{root}: missing {prefix}-{kind}-idx{ndim}-ubyte[.gz]")
    x = read_idx(images, 3)[:, None, :, :]
    y = _labels(read_idx(labels, 1), str(labels))
    if len(x) != len(y):
        raise DataError(f"{images}: {len(x)} images but {labels.name} has {len(y)} labels")
    return Split(x, y)


def _load_idx_folder(root: Path) -> tuple[Split, Split]:
    return _load_idx_split(root, "train"), _load_idx_split(root, "t10k")


# --------------------------------------------------------------------------- npz


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim != 4:
        raise DataError(f"{where}: expected samples of shape N,H,W or N,C,H,W, got {x.shape}")
    # Channels-last arrays (images saved from PIL/TF) have 1 or 3 in the last axis.
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def _load_npz(path: Path, seed: int, test_fraction: float) -> tuple[Split, Split]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read .npz ({exc})") from None

    def pair(xk: str, yk: str) -> tuple[np.ndarray, np.ndarray]:
        x = _to_nchw(arrays[xk], f"{path}:{xk}")
        y = _labels(arrays[yk], f"{path}:{yk}")
        if len(x) != len(y):
            raise DataError(f"{path}: {xk} has {len(x)} samples but {yk} has {len(y)} labels")
        return x, y

    split_keys = {"x_train", "y_train", "x_test", "y_test"}
    if split_keys <= arrays.keys():
        return Split(*pair("x_train", "y_train")), Split(*pair("x_test", "y_test"))
    if {"x", "y"} <= arrays.keys():
        return _split(*pair("x", "y"), seed, test_fraction)
    raise DataError(
        f"{path}: expected arrays x and y (or x_train, y_train, x_test, y_test), "
        f"found {', '.join(sorted(arrays)) or 'none'}"
    )


# --------------------------------------------------------------------------- image folders


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _load_image_tree(root: Path, seed: int, test_fraction: float):
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = [d.name for d in _class_dirs(root / "train")]
        test_classes = [d.name for d in _class_dirs(root / "test")]
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise DataError(f"{root / 'test' / unknown[0]}: class not present in {root / 'train'}")
        train_files = _tree_files(root / "train", classes, require_all=True)
        test_files = _tree_files(root / "test", classes, require_all=False)
        x, y = _read_images(train_files + test_files, root)
        n = len(train_files)
        return Split(x[:n], y[:n]), Split(x[n:], y[n:]), len(classes)

    classes = [d.name for d in _class_dirs(root)]
    if not classes:
        raise DataError(f"{root}: no IDX files and no class folders (expected <class>/*.png|jpg)")
    x, y = _read_images(_tree_files(root, classes, require_all=True), root)
    return (*_split(x, y, seed, test_fraction), len(classes))


def _tree_files(root: Path, classes: list[str], *, require_all: bool) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        folder = root / name
        images = _image_files(folder) if folder.is_dir() else []
        if require_all and not images:
            raise DataError(f"{folder}: class folder has no .png/.jpg images")
        files += [(p, label) for p in images]
    return files


def _read_images(files: list[tuple[Path, int]], root: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    images = []
    size = None
    for path, _ in files:
        try:
            with Image.open(path) as img:
                img.load()
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{path}: cannot read image ({exc})") from None
        if size is None:
            size = img.size
        elif img.size != size:
            raise DataError(
                f"{path}: image is {img.size[0]}x{img.size[1]} but earlier images are "
                f"{size[0]}x{size[1]}; all images must have one size"
            )
        images.append(img)
    # One colour image makes the whole dataset RGB, so every sample has the same shape.
    gray = all(img.mode in ("1", "L", "LA") for img in images)
    if not images:
        raise DataError(f"{root}: no images found")
    x = np.stack(
        [np.asarray(img.convert("L" if gray else "RGB"), dtype=np.uint8) for img in images]
    )
    x = x[:, None, :, :] if gray else x.transpose(0, 3, 1, 2)
    y = np.array([label for _, label in files], dtype=np.int64)
    return np.ascontiguousarray(x), y
