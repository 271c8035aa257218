"""Command line: parsing and printing only (DESIGN.md, "Command line").

``parser`` declares the arguments; each command's module does its work.
"""

from __future__ import annotations

import signal
import sys
import threading
import warnings

from edgeopt.core.errors import EdgeoptError
from edgeopt.core.interrupts import Interrupted, handle_signals, interruption


def _commands() -> dict:
    # Imported once SIGINT and SIGTERM are handled: these imports take a fifth of a second,
    # and a signal in them must end in the one "interrupted" line too.
    from edgeopt.cli.compile import cmd_compile
    from edgeopt.cli.inspect import cmd_bench, cmd_evaluate, cmd_inspect
    from edgeopt.cli.optimize import cmd_compress, cmd_optimize, cmd_recipes, cmd_targets
    from edgeopt.cli.package import cmd_package

    return {"optimize": cmd_optimize, "compress": cmd_compress, "compile": cmd_compile,
            "evaluate": cmd_evaluate, "bench": cmd_bench, "inspect": cmd_inspect,
            "recipes": cmd_recipes, "targets": cmd_targets, "package": cmd_package}


def main(argv: list[str] | None = None) -> int:
    """Run one command; without ``argv`` (the console script, ``python -m edgeopt.cli``)
    it is this process's whole work, and a signal after it is ignored while Python exits."""
    name = "edgeopt"
    try:
        with handle_signals(then_ignore=argv is None):
            from edgeopt.cli.parser import build_parser

            commands = _commands()
            args = build_parser().parse_args(argv)
            name = f"edgeopt {args.command}"
            return _run(commands[args.command], args, name)
    except Interrupted as exc:
        print(f"{name}: interrupted by {exc.signame}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # Python's own SIGINT handler (main called off the main thread)
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # A signal that C code turned into its own error (an import's "initialization
        # failed") is still the signal: one line, its exit code. Anything else is a bug.
        stop = interruption(exc)
        if stop is None:
            raise
        print(f"{name}: interrupted by {stop.signame}", file=sys.stderr)
        return stop.exit_code


def _run(handler, args, name: str) -> int:
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        # Past a file-size limit the kernel kills the process with SIGXFSZ; ignored, the
        # write fails with EFBIG, which the artifact writer reports in one line.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            # A user-facing warning (a layer pattern matching nothing) is one line, too.
            warnings.showwarning = lambda message, *_a, **_k: print(
                f"{name}: warning: {message}", file=sys.stderr)
            return handler(args)
    except EdgeoptError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return exc.exit_code


__all__ = ["main"]
