"""``python -m edgeopt.emulate setup|run``: make the aarch64 root, or run an artifact in it."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from edgeopt.core.errors import EdgeoptError
from edgeopt.emulate.root import ensure_root, read_marker
from edgeopt.emulate.run import DEFAULT_CPU, run_artifact


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeopt.emulate", description=(
        "Make the emulated aarch64 root (setup), or run an artifact in it (run)."))
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup", help="create/update the aarch64 root")
    s.add_argument("--tvm", action="store_true", help="also install TVM's aarch64 runtime")
    s.add_argument("--root", default=None)
    r = sub.add_parser("run", help="run an artifact on an .npy of inputs under emulation")
    r.add_argument("artifact")
    r.add_argument("inputs")
    r.add_argument("outputs")
    r.add_argument("--root", default=None)
    r.add_argument("--cpu", default=DEFAULT_CPU)
    r.add_argument("--standalone", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "setup":
            t0 = time.perf_counter()
            root = ensure_root(args.root, tvm=args.tvm, log=print)
            size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()
                       and not p.is_symlink())
            print(f"aarch64 root {root}: {read_marker(root)['packages']} "
                  f"({size / 2**20:.0f} MB, {time.perf_counter() - t0:.1f}s)")
        else:
            run = run_artifact(args.artifact, np.load(args.inputs), root=args.root, cpu=args.cpu,
                               standalone=args.standalone)
            np.save(args.outputs, run.outputs)
            print(json.dumps({**run.info, "wall_s": round(run.wall_s, 2)}))
    except EdgeoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
