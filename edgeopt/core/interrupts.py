"""SIGINT and SIGTERM as one exception, and the short sections they may not cut in two.

The command line installs ``handle_signals``: either signal then raises ``Interrupted``,
which unwinds through every ``finally`` (staging folders, locks, temporary files), where
SIGTERM's default action would kill the process with its files on disk.

``deferred()`` marks a section that must run to its end once started: taking a lock and
recording its owner, moving an artifact into place, writing a checkpoint, one training
step. A signal that arrives inside one is held and raised as the section ends, so the
files on disk are always in a state some ``finally`` or ``--resume`` knows how to handle.
Without ``handle_signals`` (edgeopt used as a library) Python's own SIGINT handler is in
charge and nothing is held.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_held: list[int] = []  # signals that arrived inside a deferred section, oldest first
_depth = 0  # how many deferred sections the main thread is in
_raised: list[int] = []  # signals raised as Interrupted since handle_signals began


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM. A KeyboardInterrupt, so no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signame = signal.Signals(signum).name
        # What a shell reports for a process that a signal ended: 130 and 143.
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {self.signame}")


def _raise(signum: int, frame) -> None:
    if _depth:
        _held.append(signum)
        return
    _held.clear()
    _raised.append(signum)
    raise Interrupted(signum)


def interruption(exc: BaseException) -> Interrupted | None:
    """The ``Interrupted`` behind ``exc``: ``exc`` itself or one in its cause/context
    chain; else, when a signal was raised in this ``handle_signals`` block, that one. C
    code can turn the exception into its own: a signal inside a pybind11 module's import
    (onnxruntime's) surfaces as ``ImportError: initialization failed``, which without this
    ended a SIGTERM'd ``optimize`` in a traceback (tests/test_interrupt.py caught it)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, Interrupted):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return Interrupted(_raised[-1]) if _raised else None


@contextmanager
def handle_signals(*, then_ignore: bool = False) -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Interrupted`` inside the block; the previous handlers
    come back after it, or with ``then_ignore`` (a process that only exits after the
    block) both are ignored: SIGTERM's default action would kill it mid-exit, with its
    work done. Signals can only be handled in the main thread: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _raised.clear()
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_IGN if then_ignore else handler)
        _held.clear()


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then raise the first one held."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers run in the main thread only: nothing to hold here
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _held:
            signum = _held[0]
            _held.clear()
            _raised.append(signum)
            raise Interrupted(signum)
