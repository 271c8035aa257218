"""Where reference weights live: ``$EDGEOPT_CACHE`` or ``~/.cache/edgeopt``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    env = os.environ.get("EDGEOPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgeopt"


def reference_weights_path(arch: str, dataset: str) -> Path:
    """``<cache>/zoo/<arch>-<dataset>.pt`` (a state_dict)."""
    return cache_dir() / "zoo" / f"{arch}-{dataset}.pt"


def info_path(weights: Path) -> Path:
    """The JSON sidecar next to a weights file: accuracy and training settings."""
    return Path(weights).with_suffix(".json")


def read_info(weights: Path) -> dict[str, Any] | None:
    path = info_path(weights)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename, so a crash never leaves a half-written file
    where a reader expects a complete one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_info(weights: Path, info: dict[str, Any]) -> None:
    write_atomic(info_path(weights), lambda p: p.write_text(json.dumps(info, indent=2) + "\n"))
