"""Model sizes: bytes on disk and bytes of tensors in memory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgeopt.core.errors import ArtifactError

REPORT_FILES = ("report.json", "report.md", "report.html")


def size_on_disk(path: str | os.PathLike, *, exclude: tuple[str, ...] = REPORT_FILES) -> int:
    """Bytes of a file, or of every file under a folder (recursively).

    In a folder, files named in ``exclude`` are skipped: the reports describe
    the artifact but are not part of what gets deployed, and their size would
    change each time they are rewritten. The manifest does count.
    """
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such file or folder")
    # Symlinks are skipped so a file linked twice is not counted twice.
    return sum(
        p.stat().st_size
        for p in path.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name not in exclude
    )


def state_dict_size(module: Any) -> int:
    """Bytes of the module's state dict tensors (parameters and persistent buffers).

    Tied weights appear under several keys but are stored once, so each
    tensor is counted once.
    """
    seen: set[tuple[int, int, str]] = set()
    total = 0
    for value in module.state_dict().values():
        if not hasattr(value, "element_size"):
            continue  # e.g. packed params objects; not plain tensors
        key = (value.data_ptr(), value.numel(), str(value.dtype))
        if key in seen:
            continue
        seen.add(key)
        total += value.numel() * value.element_size()
    return total


def human_bytes(n: int) -> str:
    """``1210000 -> "1.21 MB"``, in SI units (base 1000, as disk sizes are sold)."""
    if abs(n) < 1000:
        return f"{n} B"
    value = n / 1000
    for unit in ("kB", "MB", "GB"):
        # Compare after rounding so 999_999 prints as "1.00 MB", not "1000.00 kB".
        if abs(round(value, 2)) < 1000 or unit == "GB":
            return f"{value:.2f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
