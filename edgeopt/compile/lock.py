"""``.{out}.lock`` beside an output folder: one edgeopt run writes it at a time."""

from __future__ import annotations

import os
from pathlib import Path

from edgeopt.core.errors import OutputError


def take_lock(out: Path) -> Path:
    """``.{out}.lock`` beside ``out``, made with O_EXCL: a second run aimed at the same
    folder refuses instead of racing the first. A lock whose run is gone is taken over."""
    lock = out.with_name(f".{out.name}.lock")
    # Called in a deferred section: a lock is never left made but without its owner's pid.
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
