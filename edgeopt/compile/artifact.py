"""Writing artifact folders atomically (DESIGN.md, "The artifact").

Everything is written into a staging folder beside the destination and moved
into place at the end, so a failed run never leaves a half-written artifact
and an existing one is replaced only with ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeopt.core.errors import OutputExistsError
from edgeopt.core.files import sha256_file
from edgeopt.version import __version__

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def check_output_dir(out: str | os.PathLike, force: bool) -> Path:
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"output folder {out} already exists (use --force to replace it)")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {out} exists and is not a folder")
    return out


class ArtifactWriter:
    """Stage an artifact folder; ``commit`` writes the manifest and moves it into place."""

    def __init__(self, out: str | os.PathLike, *, force: bool = False) -> None:
        self.out = check_output_dir(out, force).resolve()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        self.committed = False

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            shutil.rmtree(self.staging, ignore_errors=True)

    def path(self, name: str) -> Path:
        return self.staging / name

    def write_bytes(self, name: str, data: bytes) -> Path:
        p = self.path(name)
        p.write_bytes(data)
        return p

    def manifest(self, fields: dict[str, Any]) -> dict[str, Any]:
        files = {
            p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(self.staging.iterdir())
            if p.is_file() and p.name != MANIFEST
        }
        return {
            "format_version": FORMAT_VERSION,
            "edgeopt_version": __version__,
            **fields,
            "files": files,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def write_manifest(self, fields: dict[str, Any]) -> dict[str, Any]:
        manifest = self.manifest(fields)
        self.write_bytes(MANIFEST, json.dumps(manifest, indent=2).encode())
        return manifest

    def refresh_manifest(self) -> dict[str, Any]:
        """Rewrite the staged manifest with its own fields, so that it also checksums the
        files written after it (the reports)."""
        old = json.loads(self.path(MANIFEST).read_text())
        return self.write_manifest({k: v for k, v in old.items() if k not in _GENERATED})

    def commit(self) -> Path:
        """Move the staged folder to its destination (replacing an old one only now)."""
        replace_dir(self.staging, self.out)
        self.committed = True
        return self.out


# What manifest() adds itself, never carried over from an older manifest.
_GENERATED = ("format_version", "edgeopt_version", "files", "created_at")


def replace_dir(src: Path, out: Path) -> Path:
    """Move folder ``src`` to ``out``; an old ``out`` is set aside first and removed only
    once the new one is in place."""
    backup = None
    if out.exists():
        backup = out.with_name(f".{out.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(out, backup)
    os.replace(src, out)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return out
