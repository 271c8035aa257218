"""Predictor for TVM artifacts (numpy + TVM's runtime only; no torch, no compiler).

An artifact may hold several builds of the model for one arch (manifest
``libraries``, best first, each with the /proc/cpuinfo flags it needs): the
predictor loads the first this CPU can run, as oneDNN and ONNX Runtime pick their
kernels at run time, and says which in ``isa``. ``EDGEOPT_TVM_ISA=<isa>`` forces
one (for tests and debugging). An artifact without ``libraries`` has one library,
``model_file``.
"""

from __future__ import annotations

import os
import platform
import threading

import numpy as np
import tvm

# tvm.runtime.vm, not tvm.relax: a runtime-only TVM (as deployed, e.g. on aarch64) has no
# compiler, and importing tvm.relax needs it.
from tvm.runtime.vm import VirtualMachine

from edgeopt.core.errors import ArtifactError
from edgeopt.runtime.cpu import cpu_flags
from edgeopt.runtime.predictor import Predictor

ISA_ENV = "EDGEOPT_TVM_ISA"
# TVM's thread pool modes (src/runtime/threading_backend.cc): 1 = big cores, the default.
_BIG_CORES = 1


def set_threads(threads: int | None) -> None:
    """Size TVM's worker pool, as ORT's intra_op_num_threads does for its session.

    The pool belongs to the calling thread and is created on first use from
    TVM_NUM_THREADS, so both are set: the variable for a pool not yet created,
    the runtime call for one that is.
    """
    if not threads:
        return
    os.environ["TVM_NUM_THREADS"] = str(threads)
    config = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
    if config is not None:
        config(_BIG_CORES, threads)


def choose_library(path, manifest: dict, *, flags: set[str] | None = None) -> dict:
    """The ``libraries`` entry to load: ``EDGEOPT_TVM_ISA``'s, else the first (best)
    whose requirements this CPU meets. ArtifactError where none can run here."""
    libraries = manifest.get("libraries") or [
        {"file": manifest["model_file"], "isa": None, "requires": []}]
    if all(not lib.get("requires") for lib in libraries) and not os.environ.get(ISA_ENV):
        return libraries[0]  # nothing to check (aarch64, cuda, old manifests)
    if flags is None:
        flags = cpu_flags()
    forced = os.environ.get(ISA_ENV)
    if forced:
        match = [lib for lib in libraries if lib["isa"] == forced]
        if not match:
            have = ", ".join(str(lib["isa"]) for lib in libraries)
            raise ArtifactError(f"{ISA_ENV}={forced}: artifact {path} has no such library "
                                f"(it has: {have})")
        candidates = match
    else:
        candidates = libraries
    for lib in candidates:
        missing = set(lib.get("requires", [])) - (flags or set())
        if not missing:
            return lib
        if flags is None and lib is candidates[-1]:
            return lib  # flags unknown: trust the least demanding build, as before dispatch
    lib = candidates[-1]
    missing = sorted(set(lib["requires"]) - flags)
    raise ArtifactError(
        f"artifact {path} library {lib['file']} ({lib['isa']}) needs CPU features this "
        f"CPU lacks: {', '.join(missing)}"
    )


class TvmPredictor(Predictor):
    backend = "tvm"

    def __init__(self, path, manifest, *, threads=None):
        super().__init__(path, manifest, threads=threads)
        arch = manifest.get("arch")
        if arch and arch != platform.machine():
            raise ArtifactError(
                f"artifact {self.path} is a TVM library for {arch} "
                f"({manifest.get('target')}); this machine is {platform.machine()}"
            )
        if manifest.get("device", "cpu") == "cuda":
            self.device = tvm.cuda(0)
            if not self.device.exist:
                raise ArtifactError(f"artifact {self.path} needs a CUDA GPU; none is visible")
        else:
            self.device = tvm.cpu(0)
        set_threads(threads)
        chosen = choose_library(self.path, manifest)
        self.isa = chosen["isa"]  # which build runs: "avx512", "avx2", "baseline", ...
        self.library = chosen["file"]
        lib = tvm.runtime.load_module(str(self.path / self.library))
        self.vm = VirtualMachine(lib, self.device)
        self._lock = threading.Lock()
        self.main = self.vm[manifest.get("entry", "main")]
        self.params = []
        if manifest.get("params_file"):
            params = tvm.runtime.load_param_dict_from_file(
                str(self.path / manifest["params_file"]))
            self.params = [params[name].copyto(self.device) for name in manifest["param_order"]]

    def run(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        # TVM does not document a relax VM as safe to call from several threads (it keeps
        # registers per instance): one call at a time. Without the lock the 8-thread test
        # still matched on a small CNN, so this is a guarantee, not a measured fix.
        with self._lock:
            out = self.main(tvm.runtime.tensor(x, self.device), *self.params)
        if not hasattr(out, "numpy"):  # relax returns a tuple for a single-output model
            out = out[0]
        return out.numpy()


PREDICTOR = TvmPredictor
