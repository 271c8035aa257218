"""`pip install edgeopt` without extras, in a fresh venv: what runs, and what says which
extra it needs in one line.

The venv gets torch==2.13.0 (the CPU build) first, then edgeopt-runtime and edgeopt from
this checkout with their base dependencies only: no tensorly, torch-pruning, TVM or
onnx2torch. Each command's exit status and last line of stderr are checked. About a minute
from pip's cache; tests/core/test_extras.py checks the same messages in the test venv.

    python bench/base_install.py [--json r.json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = ["edgeopt.zoo.resnet:resnet_small", "--data", "digits", "--eval-limit", "64",
         "--batch", "8", "--no-progress", "--force"]
# (name, argv after `edgeopt`, exit status wanted, text the last stderr line must hold)
CASES = [
    ("optimize --recipe int8", ["optimize", *MODEL, "--calib-size", "64", "--recipe", "int8",
                                "--out", "{out}/int8"], 0, ""),
    ("optimize --recipe lowrank", ["optimize", *MODEL, "--recipe", "lowrank",
                                   "--out", "{out}/lowrank"], 2, "install edgeopt[compress]"),
    ("optimize --recipe prune-distill", ["optimize", *MODEL, "--recipe", "prune-distill",
                                         "--out", "{out}/prune"], 2, "install edgeopt[compress]"),
    ("compile --backend tvm", ["compile", "edgeopt.zoo.resnet:resnet_small", "--input-shape",
                               "1,8,8", "--backend", "tvm", "--out", "{out}/tvm"], 2,
     "edgeopt[tvm]"),
]
LOAD = ("import edgeopt.runtime, numpy as np, sys; p = edgeopt.runtime.load(sys.argv[1]); "
        "print(p.run(np.zeros((1, 1, 8, 8), np.float32)).shape)")


def _pip(venv: Path, *args) -> None:
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", *map(str, args)], check=True,
                   capture_output=True, text=True, timeout=1200)


def run(venv: Path, out: Path) -> list[dict]:
    rows = []
    for name, argv, want, text in CASES:
        cmd = [venv / "bin" / "edgeopt", *[a.format(out=out) for a in argv]]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out, timeout=1200)
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        ok = proc.returncode == want and text in last and "Traceback" not in proc.stderr
        rows.append({"command": f"edgeopt {name}", "rc": proc.returncode, "ok": ok,
                     "last_line": last if want else proc.stdout.strip().splitlines()[-1]})
    proc = subprocess.run([venv / "bin" / "python", "-c", LOAD, out / "int8"],
                          capture_output=True, text=True, cwd=out, timeout=300)
    rows.append({"command": "edgeopt.runtime.load(int8).run", "rc": proc.returncode,
                 "ok": proc.returncode == 0, "last_line": (proc.stdout or proc.stderr).strip()})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--keep", help="make the venv here and keep it")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="edgeopt-base-"))
    venv = Path(args.keep) if args.keep else tmp / "venv"
    try:
        if not (venv / "bin" / "edgeopt").exists():
            subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
            _pip(venv, "torch==2.13.0")
            _pip(venv, REPO / "runtime", REPO)
        (tmp / "out").mkdir()
        rows = run(venv, tmp / "out")
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or "").strip().splitlines()
        print(f"error: {exc.cmd[-1]}: {lines[-1] if lines else exc.returncode}", file=sys.stderr)
        return 2
    finally:
        for name in ("build", "edgeopt.egg-info"):  # setuptools stages these in the checkout
            shutil.rmtree(REPO / name, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    for r in rows:
        print(f"{'ok ' if r['ok'] else 'BAD'} rc={r['rc']}  {r['command']:<40} {r['last_line']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
