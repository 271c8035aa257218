"""A class-per-folder image tree (``<class>/*.png|jpg``, optionally under ``train/`` and
``test/``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeopt.core.data.splits import Split, split_train_test
from edgeopt.core.errors import DataError, first_line

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_tree(root: Path, seed: int, test_fraction: float):
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
    return (*split_train_test(x, y, seed, test_fraction, where=str(root)), len(classes))


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
    from PIL import Image

    images = []
    size = None
    for path, _ in files:
        try:
            with Image.open(path) as img:
                img.load()
        except Exception as exc:  # noqa: BLE001 - PIL's decoders raise what they meet:
            # OSError (truncated), UnidentifiedImageError, ValueError ("Truncated IHDR
            # chunk"), SyntaxError, DecompressionBombError (over 179M pixels claimed).
            raise DataError(f"{path}: cannot read image ({first_line(exc)})") from None
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
