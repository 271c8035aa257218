"""Writing artifact folders atomically (DESIGN.md, "The artifact").

Everything is written into a staging folder beside the destination and moved
into place at the end, so a failed run never leaves a half-written artifact
and an existing one is replaced only with ``force``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeopt.core.errors import OutputError, OutputExistsError
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
    _check_writable(out)
    return out


def _check_writable(out: Path) -> None:
    """Fail before any work when ``out`` cannot be written: a probe file in the nearest
    folder that exists (root passes every permission check, so only a write tells)."""
    place = out.resolve().parent
    while not place.exists():
        place = place.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.probe.", dir=place)
    except OSError as exc:
        raise OutputError(f"cannot write to {out}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


class ArtifactWriter:
    """Stage an artifact folder; ``commit`` writes the manifest and moves it into place."""

    def __init__(self, out: str | os.PathLike, *, force: bool = False) -> None:
        self.out = check_output_dir(out, force).resolve()
        self.committed = False
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.lock = _take_lock(self.out)
        except OSError as exc:
            raise OutputError(f"cannot write to {out}: {exc.strerror or exc}") from None
        try:
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        except OSError as exc:
            self.lock.unlink(missing_ok=True)
            raise OutputError(f"cannot write to {out}: {exc.strerror or exc}") from None

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            shutil.rmtree(self.staging, ignore_errors=True)
        self.lock.unlink(missing_ok=True)
        if isinstance(exc, OSError) and _is_write_failure(exc, self.staging):
            raise OutputError(f"cannot write {self.out}: {exc.strerror or exc}") from None

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
        try:
            replace_dir(self.staging, self.out)
        except OSError as exc:
            raise OutputError(f"cannot move the artifact into {self.out}: {exc.strerror or exc}"
                              ) from None
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


_WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _is_write_failure(exc: OSError, staging: Path) -> bool:
    """A full disk or a file-size limit, or any failure on a file inside the staging folder."""
    return exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or (
        exc.errno in _WRITE_ERRNOS and str(exc.filename or "").startswith(str(staging)))


def _take_lock(out: Path) -> Path:
    """``.{out}.lock`` beside ``out``, made with O_EXCL: a second run aimed at the same
    folder refuses instead of racing the first. A lock whose run is gone is taken over."""
    lock = out.with_name(f".{out.name}.lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _lock_alive(lock):
                raise OutputError(f"another edgeopt run is writing {out} (lock {lock})") from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return lock
    raise OutputError(f"cannot lock {out} (lock {lock})")


def _lock_alive(lock: Path) -> bool:
    try:
        pid = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        return True  # being written right now, or unreadable: do not steal it
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
