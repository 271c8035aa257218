"""Run aarch64 artifacts on this x86_64 machine: qemu-user and a Debian arm64 root.

The proof that an aarch64 artifact runs (issue 4) needs aarch64 code executing real
aarch64 runtimes, not the host's. ``root.py`` keeps a small Debian arm64 user space
with an aarch64 CPython and the aarch64 wheels of numpy and onnxruntime (and TVM's
runtime); ``run.py`` runs ``runner.py`` in it under ``qemu-aarch64-static``.
``python -m edgeopt.emulate setup [--tvm]`` makes the root ahead of time (.ci/run).

Its own layer beside compile (docs/architecture.md): it runs artifacts, never builds
them, and only the pipeline (``--precision auto``) and the tests use it.
"""

from edgeopt.emulate.root import (
    EmulationUnavailable,
    cross_compiler,
    default_root,
    ensure_root,
    find_qemu,
)
from edgeopt.emulate.run import CPUS, DEFAULT_CPU, EmulatedRun, EmulationError, run_artifact

__all__ = ["CPUS", "DEFAULT_CPU", "EmulatedRun", "EmulationError", "EmulationUnavailable",
           "cross_compiler", "default_root", "ensure_root", "find_qemu", "run_artifact"]
