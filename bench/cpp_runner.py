"""Acceptance run for the C++ runner (issue 13): the reference ResNet's int8 ONNX Runtime
artifact (and its TVM fp32 and int8 artifacts) on 100 Fashion-MNIST test images, C++
(deploy/cpp) against the Python runtime.

* x86_64: the runner here against ``edgeopt.runtime.load(dir).run(x)``;
* aarch64: the cross-built runner under qemu-user in the arm64 root against the Python
  runtime in the same root (``edgeopt.emulate``), one ORT build on both sides;
* max |C++ - Python| must be <= 1e-5 per arch; the runner binary's and the runtime
  library's sizes are reported per arch (they are what a device needs besides the artifact).

    python bench/cpp_runner.py                  # writes bench/results/cpp_runner.txt
    python bench/cpp_runner.py --tiny           # digits, a briefly trained model (tests)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import edgeopt
from edgeopt import emulate
from edgeopt.core.data import load_dataset
from edgeopt.core.model import load_model
from edgeopt.deploy import build_runner, ort_library, run_runner, tvm_libraries
from edgeopt.zoo.cache import reference_weights_path

ARCH = "resnet_small"
FACTORY = "edgeopt.zoo.resnet:resnet_small"
TOL = 1e-5
RESULTS = Path(__file__).with_name("results") / "cpp_runner.txt"


CASES = {"onnxruntime": [("onnxruntime", "int8")],
         "tvm": [("tvm", "fp32"), ("tvm", "int8")]}


def artifacts(weights: Path, data, out: Path, arches: list[str],
              cases: list[tuple[str, str]]) -> dict[tuple, Path]:
    """(backend, precision, arch) -> artifact; int8 calibrated on 512 training images."""
    fp32 = load_model(FACTORY, weights=str(weights)).module
    calib = data.train.subset(512, seed=0).x.astype(np.float32) / 255.0
    int8 = edgeopt.apply(fp32, edgeopt.Int8Config(), data=[calib[i:i + 64]
                                                          for i in range(0, len(calib), 64)])
    shape = list(data.sample_shape)
    models = {"fp32": fp32, "int8": int8}
    return {(b, p, arch): edgeopt.compile(models[p], target=arch, backend=b,
                                          out=out / f"{b}-{p}-{arch}", input_shape=shape).path
            for b, p in cases for arch in arches}


def measure(backend: str, precision: str, arch: str, artifact: Path, x: np.ndarray) -> dict:
    runner = build_runner(arch, tvm=backend == "tvm")
    t0 = time.perf_counter()
    cpp = run_runner(runner, artifact, x, arch=arch)
    cpp_s = time.perf_counter() - t0
    if arch == "x86_64":
        py = edgeopt.runtime.load(artifact).run(x)
    else:
        py = emulate.run_artifact(artifact, x).outputs
    libs = tvm_libraries(arch) if backend == "tvm" else [ort_library(arch)]
    return {"backend": backend, "precision": precision, "arch": arch, "n": len(x),
            "max_abs_diff": float(np.abs(cpp - py).max()),
            "argmax_agreement": float((cpp.argmax(1) == py.argmax(1)).mean()),
            "runner_bytes": runner.stat().st_size,
            "libraries": {lib.name: lib.stat().st_size for lib in libs},
            "library_bytes": sum(lib.stat().st_size for lib in libs),
            "artifact_bytes": sum(f.stat().st_size for f in artifact.iterdir() if f.is_file()),
            "cpp_wall_s": round(cpp_s, 2)}


def report(rows: list[dict], data_name: str) -> str:
    lines = [f"C++ runner vs Python runtime: {ARCH} on {rows[0]['n']} {data_name} test images",
             "", "backend      prec  arch     max|C++-Py|  agree  runner B   runtime libs B  "
             "artifact B  PASS"]
    for r in rows:
        ok = r["max_abs_diff"] <= TOL
        lines.append(f"{r['backend']:<12} {r['precision']:<5} {r['arch']:<8} "
                     f"{r['max_abs_diff']:<12.3g} {r['argmax_agreement']:<6.3f} "
                     f"{r['runner_bytes']:<10,} {r['library_bytes']:<15,} "
                     f"{r['artifact_bytes']:<11,} {'PASS' if ok else 'FAIL'}")
    lines.append("")
    lines.append("runtime libraries: " + "; ".join(sorted({
        f"{r['arch']} {name} {size:,} B" for r in rows for name, size in r["libraries"].items()})))
    return "\n".join(lines) + "\n"


def _has_tvm() -> bool:
    try:
        import tvm  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("-n", type=int, default=100, help="test images (default 100)")
    p.add_argument("--arch", action="append", choices=["x86_64", "aarch64"],
                   help="default: both (aarch64 skipped, saying why, without qemu)")
    p.add_argument("--backend", action="append", choices=list(CASES),
                   help="default: onnxruntime, and tvm where TVM is installed")
    p.add_argument("--tiny", action="store_true", help="digits, a briefly trained model")
    p.add_argument("--json", type=Path, help="write the rows as JSON")
    p.add_argument("--results", type=Path, default=RESULTS, help="the text table's file")
    args = p.parse_args(argv)
    arches = args.arch or ["x86_64", "aarch64"]
    if "aarch64" in arches and not args.arch:
        try:
            emulate.find_qemu()
            emulate.cross_compiler("g++")
        except emulate.EmulationUnavailable as exc:
            print(f"aarch64 skipped: {exc}")
            arches.remove("aarch64")
    backends = args.backend or ["onnxruntime"] + (["tvm"] if _has_tvm() else [])
    cases = [case for b in backends for case in CASES[b]]
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from edgeopt.zoo.reference import train_reference

            args.data = "digits"
            weights = Path(tmp) / f"{ARCH}-digits.pt"
            train_reference(ARCH, "digits", epochs=1, limit=256, out=weights, progress=False)
        else:
            weights = reference_weights_path(ARCH, args.data)
            if not weights.is_file():
                print(f"no trained weights at {weights}; run python -m edgeopt.zoo.train "
                      f"--arch {ARCH} --data {args.data}")
                return 2
        data = load_dataset(args.data)
        x = data.test.x[: args.n].astype(np.float32) / 255.0
        built = artifacts(weights, data, Path(tmp), arches, cases)
        rows = [measure(*key, path, x) for key, path in built.items()]
    text = report(rows, args.data)
    print(text, end="")
    if not args.tiny:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(f"$ python bench/cpp_runner.py {' '.join(argv or sys.argv[1:])}\n"
                                f"{text}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["max_abs_diff"] <= TOL for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
