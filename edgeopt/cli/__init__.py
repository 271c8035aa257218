"""Command line: parsing and printing only (DESIGN.md, "Command line").

``parser`` declares the arguments; each command's module does its work.
"""

from __future__ import annotations

import signal
import sys
import threading
import warnings

from edgeopt.cli.compile import cmd_compile
from edgeopt.cli.inspect import cmd_bench, cmd_evaluate, cmd_inspect
from edgeopt.cli.optimize import cmd_compress, cmd_optimize, cmd_recipes, cmd_targets
from edgeopt.cli.package import cmd_package
from edgeopt.cli.parser import build_parser
from edgeopt.core.errors import EdgeoptError

COMMANDS = {"optimize": cmd_optimize, "compress": cmd_compress, "compile": cmd_compile,
            "evaluate": cmd_evaluate, "bench": cmd_bench, "inspect": cmd_inspect,
            "recipes": cmd_recipes, "targets": cmd_targets,
            "package": cmd_package}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS[args.command]
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        # Past a file-size limit the kernel kills the process with SIGXFSZ; ignored, the
        # write fails with EFBIG, which the artifact writer reports in one line.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            # A user-facing warning (a layer pattern matching nothing) is one line, too.
            warnings.showwarning = lambda message, *_a, **_k: print(
                f"edgeopt {args.command}: warning: {message}", file=sys.stderr)
            return handler(args)
    except EdgeoptError as exc:
        print(f"edgeopt {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
