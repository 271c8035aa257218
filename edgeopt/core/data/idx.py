"""IDX files (the MNIST format): a folder with train- and t10k- images and labels."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from edgeopt.core.data.npz import check_values
from edgeopt.core.data.splits import Split, as_labels
from edgeopt.core.errors import DataError, first_line

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def find_idx(root: Path, prefix: str, kind: str) -> Path | None:
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
    except (OSError, EOFError, zlib.error) as exc:  # zlib.error: damaged gzip data
        raise DataError(f"{path}: cannot read IDX file ({first_line(exc)})") from None
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
    images = find_idx(root, prefix, "images")
    labels = find_idx(root, prefix, "labels")
    for found, kind, ndim in ((images, "images", 3), (labels, "labels", 1)):
        if found is None:
            raise DataError(f"{root}: missing {prefix}-{kind}-idx{ndim}-ubyte[.gz]")
    x = read_idx(images, 3)[:, None, :, :]
    y = as_labels(read_idx(labels, 1), str(labels))
    if len(x) != len(y):
        raise DataError(f"{images}: {len(x)} images but {labels.name} has {len(y)} labels")
    check_values(x, str(images))  # float IDX (0x0D, 0x0E) can hold NaN, as .npz can
    return Split(x, y)


def load_idx_folder(root: Path) -> tuple[Split, Split]:
    return _load_idx_split(root, "train"), _load_idx_split(root, "t10k")
