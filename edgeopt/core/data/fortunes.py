"""The built-in ``fortunes`` text dataset: Debian's ``fortunes`` package, one class per
category file (``/usr/share/games/fortunes/<category>``), entries separated by lines
holding only ``%``.

Real English text that installs offline, so the transformer demo and tests need no
download. Only plain category files count: the ``.dat`` indexes that ``strfile`` writes,
the ``.u8`` symlinks beside each file, and sub-folders (``off/``, the offensive sets of
``fortunes-off``) are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeopt.core.data.splits import check_fraction
from edgeopt.core.data.text import TextDataset, text_dataset
from edgeopt.core.errors import ConfigError, DataError

FORTUNES_DIR = Path("/usr/share/games/fortunes")


def fortunes_dir(root: str | Path | None = None) -> Path:
    """``root``, else ``$EDGEOPT_FORTUNES``, else Debian's folder."""
    return Path(root or os.environ.get("EDGEOPT_FORTUNES") or FORTUNES_DIR).expanduser()


def category_files(root: Path) -> dict[str, Path]:
    """Category name -> file, for every plain category file in ``root``."""
    if not root.is_dir():
        raise DataError(
            f"fortunes not found at {root}; install it with: apt-get install fortunes"
        )
    files = {
        p.name: p for p in sorted(root.iterdir())
        if p.is_file() and not p.is_symlink() and not p.suffix and not p.name.startswith(".")
    }
    if not files:
        raise DataError(f"{root}: no fortune category files")
    return files


def read_entries(path: Path) -> list[str]:
    """The entries of one category file, each whitespace-normalised (runs of spaces,
    tabs and newlines become one space), empty ones dropped."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    entries, current = [], []
    for line in text.split("\n"):
        # A separator is "%" alone; a "%" inside a line is text.
        if line.rstrip() == "%":
            entries.append(" ".join(current))
            current = []
        else:
            current.extend(line.split())
    entries.append(" ".join(current))
    return [e for e in entries if e]


def load_fortunes(
    *,
    root: str | Path | None = None,
    categories: Sequence[str] | None = None,
    min_entries: int = 2,
    max_chars: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> TextDataset:
    """Fortunes as a labelled ``TextDataset``: label = category, numbered in sorted order.

    ``categories``: which to read (default all; an unknown one is an error).
    ``max_chars``: entries longer than this are left out (not cut), so every text is a
    whole fortune; applied before ``min_entries``. ``min_entries``: categories with fewer
    entries are left out; at least 2, so that each class is in both splits.
    """
    if min_entries < 2:
        raise ConfigError(
            f"min_entries must be >= 2 (each category is in both splits), got {min_entries}"
        )
    if max_chars is not None and max_chars < 1:
        raise ConfigError(f"max_chars must be >= 1, got {max_chars}")
    check_fraction(test_fraction)
    folder = fortunes_dir(root)
    files = category_files(folder)
    if categories is not None:
        unknown = sorted(set(categories) - files.keys())
        if unknown:
            raise DataError(
                f"{folder}: no fortune category {unknown[0]} (have: {', '.join(files)})"
            )
        files = {name: files[name] for name in sorted(set(categories))}

    kept: dict[str, list[str]] = {}
    for name, path in files.items():
        entries = read_entries(path)
        if max_chars is not None:
            entries = [e for e in entries if len(e) <= max_chars]
        if len(entries) >= min_entries:
            kept[name] = entries
    if not kept:
        raise DataError(
            f"{folder}: no category has {min_entries} or more entries"
            + (f" of at most {max_chars} characters" if max_chars else "")
        )
    classes = tuple(kept)  # already sorted: files come sorted by name
    texts = [e for entries in kept.values() for e in entries]
    y = np.repeat(np.arange(len(classes), dtype=np.int64), [len(v) for v in kept.values()])
    return text_dataset("fortunes", texts, y, classes, seed=seed,
                        test_fraction=test_fraction, where=str(folder))
