"""Writing artifact folders atomically (DESIGN.md, "The artifact").

Everything is written into a staging folder beside the destination and moved
into place at the end, so a failed run never leaves a half-written artifact
and an existing one is replaced only with ``force``.

Interrupted (SIGINT, SIGTERM: ``core.interrupts``), a run leaves nothing either: the steps
that create or move files (the probe, the lock and its owner, the staging folder, the
move into place) are deferred sections, so each happens whole or not at all, and a
writer whose ``__exit__`` never ran (a signal between ``__init__`` and ``__enter__``) is
cleaned up at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeopt.compile.lock import take_lock
from edgeopt.core.errors import OutputError, OutputExistsError
from edgeopt.core.files import sha256_file
from edgeopt.core.interrupts import deferred
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
    with deferred():
        try:
            fd, probe = tempfile.mkstemp(prefix=f".{out.name}.probe.", dir=place)
        except OSError as exc:
            raise OutputError(f"cannot write to {out}: {exc.strerror or exc}") from None
        os.close(fd)
        os.unlink(probe)


# Writers whose staging folder and lock are on disk; at exit, what is left is removed.
_OPEN: set[ArtifactWriter] = set()


@atexit.register
def _discard_open() -> None:
    for writer in list(_OPEN):
        writer.discard()


class ArtifactWriter:
    """Stage an artifact folder; ``commit`` writes the manifest and moves it into place."""

    def __init__(self, out: str | os.PathLike, *, force: bool = False) -> None:
        self.out = check_output_dir(out, force).resolve()
        self.committed = False
        self.lock: Path | None = None
        self.staging: Path | None = None
        # Folders above --out this writer made: removed again if it never commits.
        self.made = _missing_parents(self.out)
        try:
            with deferred():
                _OPEN.add(self)
                try:
                    self.out.parent.mkdir(parents=True, exist_ok=True)
                    self.lock = take_lock(self.out)
                    if self.out.exists() and not force:
                        # A run that took the lock after another committed: checked
                        # again under the lock, it refuses instead of replacing that one.
                        raise OutputExistsError(f"output folder {self.out} already exists "
                                                f"(use --force to replace it)")
                    self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.",
                                                         dir=self.out.parent))
                except OSError as exc:
                    raise OutputError(f"cannot write to {out}: {exc.strerror or exc}") from None
        except BaseException:
            self.discard()  # the OutputError, or a signal held while the lock was taken
            raise

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()
        if isinstance(exc, OSError) and _is_write_failure(exc, self.staging):
            raise OutputError(f"cannot write {self.out}: {exc.strerror or exc}") from None

    def discard(self) -> None:
        """Remove the staging folder (unless committed), the lock and the folders made."""
        with deferred():
            if not self.committed and self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
            if self.lock is not None:
                self.lock.unlink(missing_ok=True)
            if not self.committed:
                for folder in self.made:  # deepest first; rmdir leaves one that is not empty
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            _OPEN.discard(self)

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
        with deferred():  # moved and marked so together: discard() must not remove it
            try:
                replace_dir(self.staging, self.out)
            except OSError as exc:
                raise OutputError(f"cannot move the artifact into {self.out}: "
                                  f"{exc.strerror or exc}") from None
            self.committed = True
        return self.out


# What manifest() adds itself, never carried over from an older manifest.
_GENERATED = ("format_version", "edgeopt_version", "files", "created_at")


def _missing_parents(out: Path) -> list[Path]:
    """The folders above ``out`` that do not exist yet, deepest first."""
    missing = []
    for folder in out.parents:
        if folder.exists():
            break
        missing.append(folder)
    return missing


def replace_dir(src: Path, out: Path) -> Path:
    """Move folder ``src`` to ``out``; an old ``out`` is set aside first and removed only
    once the new one is in place."""
    backup = None
    if out.exists():
        backup = out.with_name(f".{out.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(out, backup)
    try:
        os.replace(src, out)
    except BaseException:
        if backup is not None:
            os.replace(backup, out)  # the old artifact back, rather than none at all
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return out


_WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _is_write_failure(exc: OSError, staging: Path) -> bool:
    """A full disk or a file-size limit, or any failure on a file inside the staging folder."""
    return exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or (
        exc.errno in _WRITE_ERRNOS and str(exc.filename or "").startswith(str(staging)))
