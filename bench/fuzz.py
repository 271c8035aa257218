"""Fuzz every user-facing loader and count the outcomes (issue 14).

    python bench/fuzz.py [--cases 10000] [--seed 0] [--loaders npz,onnx] [--seconds S]
                         [--json OUT] [--show N]

For each loader in ``edgeopt.fuzz.LOADERS``: ``--cases`` hypothesis-generated cases (valid
files damaged one field, member or byte at a time), each run in a sandbox under a time
limit. The table counts successes (ok), one-line EdgeoptErrors naming the file (clear),
anything else (unhandled: must be 0), cases past the time limit (hangs) and cases that left
a file outside the sandbox's output folder (stray). ``--show`` prints the first few
unhandled cases in full; ``--seconds`` ends each loader at a time budget, its row then
counting the cases that ran.

``run(cases, seed)`` returns the same rows for other benches (bench/reliability.py).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from edgeopt.fuzz import LOADERS, run_case, warm_up
from edgeopt.fuzz.harness import write_tree

COLUMNS = ("cases", "ok", "clear", "unhandled", "hangs", "stray")


class _OutOfTime(Exception):
    """Raised from inside hypothesis's loop to end it at the time budget."""


# --dump: the folder each bad case's files are written to (a module global, so that the
# forked children see it without widening every signature).
DUMP: Path | None = None


def _generate(name: str, cases: int, seed: int, root: str, limit: float, show: int,
              deadline: float | None, send) -> None:
    """In a child process: run the cases, sending ``(outcome, detail or "")`` for each."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as with_seed

    warm_up()
    loader = LOADERS[name]
    shown = 0

    # Generation only: no shrinking (nothing fails here, every outcome is counted), no
    # database, the seed fixed so that a count can be reproduced.
    @settings(max_examples=cases, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @with_seed(seed)
    @given(loader.cases())
    def one(tree):
        nonlocal shown
        if deadline is not None and time.time() > deadline:
            raise _OutOfTime
        result = run_case(loader, tree, Path(root), limit=limit)
        text = ""
        if result.outcome not in ("ok", "clear") and shown < show:
            shown += 1
            text = f"--- {name} {result.outcome}: {sorted(tree.files)} -> {tree.target}\n" \
                   f"{result.detail}"
        if result.outcome not in ("ok", "clear") and DUMP is not None:
            case = DUMP / f"{name}-{result.outcome}-{time.time_ns()}"
            write_tree(tree, case)
            text += f"\n    files in {case}" if text else ""
        send.send((result.outcome, text))

    try:
        one()
    except _OutOfTime:
        pass


def run_loader(name: str, cases: int, seed: int, *, limit: float = 10.0,
               show: int = 0, seconds: float | None = None) -> dict:
    """One loader's row: ``cases`` generated cases run and counted, or as many as
    ``seconds`` allow (the row's ``cases`` is then the number that ran).

    The cases run in a child process: a loader that kills the interpreter (a segfault in a
    C++ parser: torch's TorchScript reader had one) is one unhandled case, and a new child
    goes on with the next seed, rather than the bench ending without a table."""
    counts: Counter = Counter()
    started = time.perf_counter()
    deadline = None if seconds is None else time.time() + seconds
    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as root:
        for attempt in range(cases):
            left = cases - sum(counts.values())
            if left <= 0 or (deadline is not None and time.time() > deadline):
                break
            receive, send = context.Pipe(duplex=False)
            child = context.Process(target=_generate, args=(
                name, left, seed + attempt, root, limit, show, deadline, send))
            child.start()
            send.close()
            while True:
                try:
                    outcome, text = receive.recv()
                except EOFError:
                    break
                counts[outcome] += 1
                if text:
                    print(text, file=sys.stderr)
            child.join()
            if child.exitcode == 0:
                break
            counts["unhandled"] += 1  # the case it was running when it died
            print(f"--- {name} unhandled: the interpreter died (exit {child.exitcode}); "
                  f"going on with seed {seed + attempt + 1}", file=sys.stderr)
    return {"loader": name, "cases": sum(counts.values()), "ok": counts["ok"],
            "clear": counts["clear"], "unhandled": counts["unhandled"],
            "hangs": counts["hang"], "stray": counts["stray"],
            "seconds": round(time.perf_counter() - started, 1)}


def run(cases: int, seed: int, loaders: list[str] | None = None, *, show: int = 0) -> list[dict]:
    """A row per loader: keys loader, cases, ok, clear, unhandled, hangs, stray (and
    seconds). Clean means unhandled, hangs and stray are all 0."""
    return [run_loader(name, cases, seed, show=show) for name in loaders or LOADERS]


def table(rows: list[dict]) -> str:
    header = f"{'loader':<12}" + "".join(f"{c:>10}" for c in (*COLUMNS, "seconds"))
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['loader']:<12}"
                     + "".join(f"{row[c]:>10}" for c in (*COLUMNS, "seconds")))
    total = {c: sum(r[c] for r in rows) for c in COLUMNS}
    lines.append("-" * len(header))
    lines.append(f"{'all':<12}" + "".join(f"{total[c]:>10}" for c in COLUMNS)
                 + f"{round(sum(r['seconds'] for r in rows), 1):>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases per loader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loaders", help=f"comma-separated subset of {', '.join(LOADERS)}")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--show", type=int, default=0, help="print this many bad cases")
    parser.add_argument("--dump", type=Path, help="write each bad case's files under this folder")
    parser.add_argument("--seconds", type=float,
                        help="stop each loader after this long (its row counts what ran)")
    args = parser.parse_args(argv)
    names = args.loaders.split(",") if args.loaders else list(LOADERS)
    unknown = [n for n in names if n not in LOADERS]
    if unknown:
        parser.error(f"unknown loader {unknown[0]!r} (valid: {', '.join(LOADERS)})")
    global DUMP
    DUMP = args.dump
    rows = []
    for name in names:  # printed as each loader finishes: a long run shows progress
        rows.append(run_loader(name, args.cases, args.seed, show=args.show,
                               seconds=args.seconds))
        print(f"{name}: {rows[-1]}", file=sys.stderr, flush=True)
    budget = f" --seconds {args.seconds:g}" if args.seconds else ""
    print(f"bench/fuzz.py --cases {args.cases} --seed {args.seed}{budget}")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    clean = all(r["unhandled"] == r["hangs"] == r["stray"] == 0 for r in rows)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
