"""One fuzz case run in a sandbox, under a time limit, and classified.

A case is a small file tree (``Tree``). It is written into a fresh folder, the loader is
called on it with the temporary folder and the working directory pointed into the
sandbox, and the result is one of ``OUTCOMES``:

- ``ok``: the loader returned, and what it returned passed the loader's own check;
- ``clear``: an ``EdgeoptError`` of one line naming the file (what a user should see);
- ``unhandled``: any other exception, or an ``EdgeoptError`` that is not one line naming
  the file, or a returned value that fails the check;
- ``hang``: still running at the time limit;
- ``stray``: it ended, but left a file beside its input, in the temporary folder or in
  the working directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.core.errors import EdgeoptError

OUTCOMES = ("ok", "clear", "unhandled", "hang", "stray")


@dataclass(frozen=True)
class Tree:
    """A case: file contents by relative path, and the relative path the loader is given
    ("." for the folder itself)."""

    files: dict[str, bytes]
    target: str = "."


@dataclass(frozen=True)
class Loader:
    """A user-facing loader: its cases, its entry point, and what a success must hold."""

    name: str
    cases: Callable[[], Any]  # -> a hypothesis strategy of Trees
    load: Callable[[Path], Any]
    check: Callable[[Any], None] = field(default=lambda value: None)


@dataclass(frozen=True)
class Result:
    outcome: str
    detail: str = ""


class CaseTimeout(BaseException):
    """Raised in the loader at the time limit. A BaseException so that a loader's own
    ``except Exception`` (there are several, around third-party parsers) cannot turn a
    hang into an ordinary error."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """SIGALRM after ``seconds``: interrupts Python code, and C code when it returns to
    the interpreter; a loop inside one C call would need a child process to stop."""
    def fire(signum, frame):
        raise CaseTimeout

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def listing(root: Path) -> set[str]:
    """Every file and folder under ``root``, relative to it."""
    found = set()
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


def write_tree(tree: Tree, folder: Path) -> Path:
    for rel, data in tree.files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder / tree.target


@contextlib.contextmanager
def _redirected(tmp: Path, cwd: Path) -> Iterator[None]:
    """Temporary files and relative paths land in the sandbox, where they can be seen."""
    saved = tempfile.tempdir, os.environ.get("TMPDIR"), os.getcwd()
    tempfile.tempdir = str(tmp)
    os.environ["TMPDIR"] = str(tmp)
    os.chdir(cwd)
    try:
        yield
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        os.chdir(saved[2])


def _clear(exc: EdgeoptError, box: Path) -> Result:
    message = str(exc)
    if not message or "\n" in message:
        return Result("unhandled", f"{type(exc).__name__} of not one line: {message!r}")
    if str(box) not in message:
        return Result("unhandled", f"{type(exc).__name__} names no file: {message}")
    return Result("clear", message)


def run_case(loader: Loader, tree: Tree, root: Path, *, limit: float = 10.0) -> Result:
    """``loader`` on ``tree`` in a fresh sandbox under ``root`` (removed afterwards)."""
    box = Path(tempfile.mkdtemp(prefix=f"{loader.name}-", dir=root))
    given, tmp, cwd = box / "in", box / "tmp", box / "cwd"
    for folder in (given, tmp, cwd):
        folder.mkdir()
    try:
        target = write_tree(tree, given)
        before = listing(given)
        try:
            with _redirected(tmp, cwd), time_limit(limit):
                loader.check(loader.load(target))
            result = Result("ok")
        except CaseTimeout:
            result = Result("hang", f"still running after {limit} s")
        except EdgeoptError as exc:
            result = _clear(exc, given)
        except Exception:  # noqa: BLE001 - any other exception is what fuzzing looks for
            result = Result("unhandled", traceback.format_exc(limit=-8))
        stray = sorted((listing(given) - before) | {f"$TMPDIR/{p}" for p in listing(tmp)}
                       | {f"$CWD/{p}" for p in listing(cwd)})
        if stray and result.outcome in ("ok", "clear"):
            result = Result("stray", ", ".join(stray[:5]))
        return result
    finally:
        shutil.rmtree(box, ignore_errors=True)
