"""Run an artifact folder on inputs from an .npy file and write the outputs to an .npy.

This file is executed by the *aarch64* Python of the emulated root (see
``edgeopt.emulate``), which has numpy, onnxruntime and optionally TVM's runtime,
but no torch and not the host's x86 venv. So it imports nothing from edgeopt at the top.

By default it runs the artifact through edgeopt's own deployment code,
``edgeopt.runtime.load(dir).run(x)``, from the edgeopt-runtime distribution on the
guest's path (run.py puts the root's copy of it there; on a device, ``pip install
edgeopt-runtime``): DESIGN.md promises that the runtime needs numpy and the backend's
runtime only, and running it on aarch64 proves the very package users deploy. It is
imported in a function so that ``--standalone``, which uses the copies below and needs
nothing of edgeopt, works on a device with only this file, or tells an edgeopt runtime
bug from a backend one.

    python3 runner.py ARTIFACT_DIR INPUTS.npy OUTPUTS.npy [--threads N] [--standalone]

Prints one JSON line (platform, backend, runtime version, seconds) on success; exits 2 with
one line on stderr when the artifact is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_verified_manifest(folder: str) -> dict:
    try:
        with open(os.path.join(folder, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        fail(f"{folder}: no readable manifest.json ({exc})")
    # The same refusal as edgeopt.runtime.verify: a tampered file never runs.
    for name, info in manifest.get("files", {}).items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            fail(f"artifact {folder} is missing {name}")
        if sha256_file(path) != info["sha256"]:
            fail(f"artifact file {path} does not match its manifest checksum")
    return manifest


def run_onnxruntime(folder: str, manifest: dict, x, threads: int):
    import onnxruntime as ort

    # Same options as edgeopt/compile/backends/onnxruntime/runtime.py::make_session.
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # edgeopt/core/ort_options.py: exact u8 x s8 products on x86 without VNNI (a no-op on
    # arm64, kept so the standalone copy stays the same session).
    opts.add_session_config_entry("session.x64quantprecision", "1")
    model = os.path.join(folder, manifest.get("model_file", "model.onnx"))
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    return session.run([session.get_outputs()[0].name], feed)[0], "standalone"


def run_tvm(folder: str, manifest: dict, x, threads: int):
    import numpy as np
    import tvm
    from tvm.runtime import vm as rvm

    lib = tvm.runtime.load_module(os.path.join(folder, manifest.get("model_file", "model.so")))
    dev = tvm.cpu()
    machine = rvm.VirtualMachine(lib, dev)
    args = [tvm.runtime.tensor(x, dev)]
    # Weights kept beside the library (not linked in) are passed after the input.
    params_file = manifest.get("params_file")
    if params_file:
        with open(os.path.join(folder, params_file), "rb") as f:
            params = tvm.runtime.load_param_dict(f.read())
        args += [params[k] for k in manifest.get("param_order", sorted(params))]
    out = machine[manifest.get("entry", "main")](*args)
    if not hasattr(out, "numpy"):  # a tuple of outputs: the first is the logits
        out = out[0]
    return np.asarray(out.numpy()), "standalone"


BACKENDS = {"onnxruntime": run_onnxruntime, "tvm": run_tvm}


def run_edgeopt(folder: str, threads: int, x):
    """``edgeopt.runtime.load(folder).run(x)`` from the installed edgeopt-runtime."""
    try:
        import edgeopt.runtime
        from edgeopt.core.errors import EdgeoptError
    except ImportError as exc:
        fail(f"edgeopt-runtime is not installed here ({exc}); pip install edgeopt-runtime, "
             "or run with --standalone")
    try:
        predictor = edgeopt.runtime.load(folder, threads=threads)
        return predictor.run(x), f"edgeopt {type(predictor).__name__}", predictor.backend
    except EdgeoptError as exc:
        fail(str(exc))


def runtime_version(backend: str) -> str:
    module = {"onnxruntime": "onnxruntime", "tvm": "tvm"}.get(backend)
    return getattr(sys.modules.get(module), "__version__", "?") if module else "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact")
    ap.add_argument("inputs")
    ap.add_argument("outputs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--standalone", action="store_true")
    args = ap.parse_args(argv)
    # TVM's wheel in the root carries only libtvm_runtime (the compiler library is removed).
    os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))

    import numpy as np

    x = np.ascontiguousarray(np.load(args.inputs), dtype=np.float32)
    start = time.perf_counter()
    if args.standalone:
        manifest = read_verified_manifest(args.artifact)
        backend = manifest.get("backend", "")
        if backend not in BACKENDS:
            fail(f"backend {backend!r} has no standalone runner (known: {', '.join(BACKENDS)})")
        y, runner = BACKENDS[backend](args.artifact, manifest, x, args.threads)
    else:
        y, runner, backend = run_edgeopt(args.artifact, args.threads, x)
    seconds = time.perf_counter() - start
    version = runtime_version(backend)
    np.save(args.outputs, np.asarray(y))
    print(json.dumps({
        "machine": platform.machine(),
        "python": platform.python_version(),
        "backend": backend,
        "runtime_version": version,
        "runner": runner,
        "numpy": np.__version__,
        "seconds": round(seconds, 3),
        "batch": int(x.shape[0]),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
