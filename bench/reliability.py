"""Failures are counted (issue 14): one table of every fault class edgeopt is held to.

    python bench/reliability.py [--kills 20] [--fuzz-cases 10000] [--json OUT]

Each row is a fault class and its cases, run through edgeopt's own code paths
(bench/faults.py, bench/interrupt.py, bench/fuzz.py, and the determinism and
thread-safety checks of tests/). Columns: cases tried; how many ended as specified
("clear": one clear error line for a fault; the identical bytes or outputs for
determinism and concurrency; a clean exit 130/143 or a complete run for a kill); and the
counts that must be 0: unhandled exceptions, hangs, data lost (a file that was there
changed or gone), half-written artifacts, stray files.

The fuzz rows come from bench/fuzz.py when it is present (``run(cases, seed)``).
Exit status 1 when any must-be-0 column is not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import faults, interrupt  # noqa: E402

LOSS = ("unhandled", "hangs", "lost", "half_written", "stray")
COLUMNS = ("tried", "clear", *LOSS)


def _row(fault: str, cases: list[faults.Case], note: str = "") -> dict:
    bad = [c for c in cases if not c.clear or c.unhandled or c.lost or c.half_written or c.stray]
    return {"fault": fault, "tried": len(cases), "clear": sum(c.clear for c in cases),
            "unhandled": sum(c.unhandled for c in cases), "hangs": 0,
            "lost": sum(c.lost for c in cases),
            "half_written": sum(c.half_written for c in cases),
            "stray": sum(c.stray for c in cases),
            "note": f"not clear: {bad[0].name}: {bad[0].note}" if bad else note}


def interruption(root: Path, kills: int) -> list[dict]:
    _, outcomes = interrupt.kill_runs(kills, seed=0, root=root / "kills")
    sigs = sum(o.rc in (130, 143) for o in outcomes)
    kill_cases = [faults.Case(f"kill {i}", o.clear, unhandled="Traceback" in o.stderr,
                              half_written=o.half_written, stray=bool(o.stray), note=o.note)
                  for i, o in enumerate(outcomes)]
    hangs = sum(o.rc is None for o in outcomes)
    row = _row(f"interruption ({kills} seeded SIGINT/SIGTERM)", kill_cases,
               f"{sigs} exited 130/143, {len(outcomes) - sigs} finished first")
    row["hangs"] = hangs
    (root / "resume").mkdir()
    res = interrupt.resume_run(root / "resume")
    resume = faults.Case("resume", res.ok, half_written=res.cut.half_written or
                         res.resumed.half_written, stray=bool(res.cut.stray or res.resumed.stray))
    return [row, _row("interruption: --resume after SIGINT", [resume],
                      f"cut at step {res.cut_at_step}, resumed from {res.resumed_from}, "
                      f"model.onnx sha256 {'identical' if res.same_bytes else 'DIFFERENT'}")]


def fuzz_rows(cases: int) -> list[dict]:
    try:
        from bench import fuzz
    except ImportError:
        return [_missing("fuzz", "not run (bench/fuzz.py missing)")]
    if cases <= 0:
        return [_missing("fuzz", "not run (--fuzz-cases 0)")]
    rows = []
    for r in fuzz.run(cases, seed=0):
        rows.append({"fault": f"fuzz: {r['loader']}", "tried": r["cases"],
                     "clear": r["ok"] + r["clear"], "unhandled": r["unhandled"],
                     "hangs": r["hangs"], "lost": 0, "half_written": 0, "stray": r["stray"],
                     "note": f"{r['ok']} loaded, {r['clear']} refused in one line"})
    return rows


def _missing(fault: str, note: str) -> dict:
    return {"fault": fault, **dict.fromkeys(COLUMNS), "note": note}


def determinism(root: Path) -> list[dict]:
    """tests/test_determinism.py's runs (its tiny recipes) on its model: the tests' TinyCNN
    (width 8, hidden 32) briefly trained on digits (mixed needs weights worth shrinking)."""
    from edgeopt.core.data import Preprocess, load_dataset
    from tests.conftest import fit_tiny, make_tiny_cnn
    from tests.test_determinism import _sha

    data = load_dataset("digits")
    model = fit_tiny(make_tiny_cnn(seed=0, width=8, hidden=32), Preprocess()(data.train.x),
                     data.train.y, epochs=2, lr=3e-3)
    cases = []
    for name, threads in (("int8", (1, 1)), ("w4a8-adaround", (1, 1)), ("mixed", (1, 1)),
                          ("cluster16", (1, 1)), ("int8", (1, 2))):
        label = f"{name} at {threads[0]} and {threads[1]} threads"
        try:
            a, b = (_sha(model, data, name, root / f"{name}-{threads[0]}v{threads[1]}-{i}", threads=t)
                    for i, t in enumerate(threads))
            cases.append(faults.Case(label, a == b, note="" if a == b else f"{a} != {b}"))
        except Exception:
            cases.append(faults.Case(label, False, unhandled=True,
                                     note=traceback.format_exc().splitlines()[-1]))
    return [_row("determinism (same seed: model.onnx sha256)", cases,
                 "int8, w4a8-adaround, mixed, cluster16 twice; int8 at 1 vs 2 threads")]


def concurrency(root: Path) -> list[dict]:
    """tests/runtime/test_concurrency.py's check: 8 threads = serial calls, per backend."""
    import edgeopt
    from edgeopt.runtime import load
    from edgeopt.testing import tiny_cnn
    from tests.runtime.test_concurrency import INPUT_SHAPE, _check_threads_match_serial

    backends = ["onnxruntime"]
    try:
        import tvm  # noqa: F401

        backends.append("tvm")
    except ImportError:
        pass
    cases = []
    for backend in backends:
        try:
            art = edgeopt.compile(tiny_cnn(), target="x86_64", backend=backend,
                                  input_shape=INPUT_SHAPE, out=root / f"conc-{backend}")
            _check_threads_match_serial(load(art.path, threads=1))
            cases.append(faults.Case(backend, True))
        except AssertionError as exc:
            cases.append(faults.Case(backend, False, note=str(exc).splitlines()[0]))
        except Exception:
            cases.append(faults.Case(backend, False, unhandled=True,
                                     note=traceback.format_exc().splitlines()[-1]))
    return [_row("concurrency (one Predictor, 8 threads)", cases,
                 f"{', '.join(backends)}: 3 rounds of 48 calls equal to serial")]


TITLES = {"bad data": "bad data (NaN, Inf, constant, labels)",
          "destinations": "destination (unwritable, invalid, file, exists, full)",
          "concurrent": "concurrent runs, same --out",
          "interruption": "interruption (seeded SIGINT/SIGTERM)",
          "security": "security (external data, symlink, manifest, pickles)",
          "fuzz": "fuzz", "determinism": "determinism (same seed: model.onnx sha256)",
          "concurrency": "concurrency (one Predictor, 8 threads)"}


def collect(root: Path, *, kills: int, fuzz_cases: int, log=print,
            only: set[str] | None = None) -> list[dict]:
    steps = [
        ("bad data", lambda: [_row("bad data (NaN, Inf, constant, labels)",
                                   faults.bad_data(_fresh(root, "data")))]),
        ("destinations", lambda: [_row("destination (unwritable, invalid, file, exists, full)",
                                       faults.destinations(_fresh(root, "dest")))]),
        ("concurrent", lambda: [_row("concurrent runs, same --out",
                                     faults.concurrent(_fresh(root, "pairs")))]),
        ("interruption", lambda: interruption(_fresh(root, "intr"), kills)),
        ("security", lambda: [_row("security (external data, symlink, manifest, pickles)",
                                   faults.security(_fresh(root, "sec")))]),
        ("fuzz", lambda: fuzz_rows(fuzz_cases)),
        ("determinism", lambda: determinism(_fresh(root, "det"))),
        ("concurrency", lambda: concurrency(_fresh(root, "conc"))),
    ]
    rows = []
    for name, step in steps:
        if only is not None and name not in only:
            rows.append({"fault": TITLES[name], **dict.fromkeys(COLUMNS),
                         "note": "not run (--only)"})
            continue
        log(f"reliability: {name}")
        rows += step()
    return rows


def _fresh(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    return path


def table(rows: list[dict]) -> str:
    width = max(len(r["fault"]) for r in rows)
    head = f"{'fault class':{width}s}  " + "  ".join(f"{c:>12s}" for c in COLUMNS) + "  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = "  ".join(f"{'-' if r[c] is None else r[c]!s:>12s}" for c in COLUMNS)
        lines.append(f"{r['fault']:{width}s}  {cells}  {r['note']}")
    total = {c: sum(r[c] or 0 for r in rows) for c in COLUMNS}
    lines.append(f"{'total':{width}s}  " + "  ".join(f"{total[c]!s:>12s}" for c in COLUMNS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="seeded interruptions (default 20)")
    ap.add_argument("--fuzz-cases", type=int, default=10000, help="per loader (default 10000)")
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument("--only", help="comma-separated classes to run (default: all): "
                    + ", ".join(TITLES))
    args = ap.parse_args(argv)
    only = None if args.only is None else set(args.only.split(","))
    if only is not None and only - set(TITLES):
        ap.error(f"--only: unknown class {sorted(only - set(TITLES))[0]!r}")
    with tempfile.TemporaryDirectory(prefix="edgeopt-reliability-") as tmp:
        rows = collect(Path(tmp), kills=args.kills, fuzz_cases=args.fuzz_cases,
                       log=lambda m: print(m, file=sys.stderr), only=only)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    clean = all((r[c] or 0) == 0 for r in rows for c in LOSS)
    clear = all(r["clear"] == r["tried"] for r in rows if r["tried"] is not None)
    return 0 if clean and clear else 1


if __name__ == "__main__":
    sys.exit(main())
