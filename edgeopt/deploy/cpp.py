"""Build and run the C++ runner of deploy/cpp for x86_64 and aarch64.

The runner opens libonnxruntime.so.1 at run time; the library is the one inside the
onnxruntime wheel: the host's for x86_64, the arm64 root's (edgeopt.emulate) for aarch64,
so the C++ and Python runtimes run one ORT build per architecture.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgeopt.core.errors import EdgeoptError
from edgeopt.emulate.root import SITE, cross_compiler, ensure_root, find_qemu
from edgeopt.emulate.run import DEFAULT_CPU, write_cpuinfo

ARCHES = ("x86_64", "aarch64")
BINARY = "edgeopt-run"
ORT_SONAME = "libonnxruntime.so.1"


class DeployError(EdgeoptError):
    """The runner could not be built, found or run."""


def source_dir() -> Path:
    """deploy/cpp of this checkout (the sources are not in the installed wheel)."""
    src = Path(__file__).resolve().parents[2] / "deploy" / "cpp"
    if not (src / "Makefile").is_file():
        raise DeployError(f"the C++ runner's sources are not at {src}: run from an edgeopt "
                          "checkout, or pass a built runner with --runner")
    return src


def _check_arch(arch: str) -> None:
    if arch not in ARCHES:
        raise DeployError(f"no C++ runner for {arch!r} (known: {', '.join(ARCHES)})")


def build_runner(arch: str, build_dir: str | os.PathLike | None = None, *,
                 tvm: bool = False) -> Path:
    """``make`` the runner for ``arch`` (a no-op when up to date); returns the binary.

    ``tvm``: with TVM's runtime linked in, and ``lib/`` beside the binary linking to the
    TVM libraries it loads (as in a package), so it runs where it was built.
    """
    _check_arch(arch)
    src = source_dir()
    build = Path(build_dir) if build_dir else src / "build" / (f"{arch}-tvm" if tvm else arch)
    extra = []
    if tvm:
        libs = tvm_libraries(arch)
        extra = ["TVM=1", f"TVM_SITE={libs[0].parents[2]}"]
    if shutil.which("make") is None:
        raise DeployError("make not found: apt-get install make")
    if arch == "aarch64":
        cross_compiler("g++")
    elif shutil.which("g++") is None:
        raise DeployError("g++ not found: apt-get install g++")
    proc = subprocess.run(["make", "-C", str(src), f"ARCH={arch}", f"BUILD={build.resolve()}",
                           *extra], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise DeployError(f"building the {arch} runner failed: "
                          f"{lines[-1] if lines else 'no output'}")
    if tvm:
        (build / "lib").mkdir(exist_ok=True)
        for lib in libs:
            # Renamed into place: a runner started meanwhile never finds the link missing.
            tmp = build / "lib" / f".{lib.name}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(lib)
            os.replace(tmp, build / "lib" / lib.name)
    return build.resolve() / BINARY


def tvm_libraries(arch: str) -> list[Path]:
    """libtvm_runtime.so and libtvm_ffi.so of the apache-tvm wheel for ``arch``."""
    _check_arch(arch)
    if arch == platform.machine():
        try:
            import tvm_ffi  # the host's wheel, as edgeopt.runtime uses it
        except ImportError:
            raise DeployError("TVM is not installed: pip install 'edgeopt[tvm]'") from None
        site = Path(tvm_ffi.__file__).parents[1]
    else:
        site = ensure_root(tvm=True) / SITE
    libs = [site / "tvm" / "lib" / "libtvm_runtime.so", site / "tvm_ffi" / "lib" / "libtvm_ffi.so"]
    for lib in libs:
        if not lib.is_file():
            raise DeployError(f"TVM's runtime library {lib} is missing")
    return libs


def ort_library(arch: str) -> Path:
    """The libonnxruntime.so of the onnxruntime wheel for ``arch``."""
    _check_arch(arch)
    if arch == platform.machine():
        import onnxruntime  # the host's wheel, as edgeopt.runtime uses it

        capi = Path(onnxruntime.__file__).parent / "capi"
    else:
        capi = ensure_root() / SITE / "onnxruntime" / "capi"
    libs = sorted(capi.glob("libonnxruntime.so.1*"))
    if not libs:
        raise DeployError(f"no libonnxruntime.so.1* in {capi}")
    return libs[0]


def runner_command(binary: Path, arch: str, *, cpu: str = DEFAULT_CPU) -> tuple[list, dict]:
    """argv prefix and environment that run ``binary``: natively, or under qemu-user."""
    env = {"PATH": "/usr/bin:/bin", "EDGEOPT_ORT_LIB": str(ort_library(arch))}
    if arch == platform.machine():
        return [str(binary)], env
    root = ensure_root()
    write_cpuinfo(root, cpu)  # ORT's cpuinfo segfaults on the host's x86 /proc/cpuinfo
    return [find_qemu(), "-cpu", cpu, "-L", str(root), str(binary)], env


def run_runner(binary: str | os.PathLike, artifact: str | os.PathLike, x: np.ndarray, *,
               arch: str | None = None, threads: int | None = None,
               timeout: float = 600) -> np.ndarray:
    """The runner's first output for the float32 batch ``x``."""
    arch = arch or platform.machine()
    argv, env = runner_command(Path(binary), arch)
    with tempfile.TemporaryDirectory(prefix="edgeopt-run.") as tmp:
        np.save(Path(tmp) / "x.npy", np.ascontiguousarray(x, dtype=np.float32))
        cmd = [*argv, str(artifact), f"{tmp}/x.npy", f"{tmp}/y.npy"]
        if threads:
            cmd += ["--threads", str(threads)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise DeployError(f"the {arch} runner failed (exit {proc.returncode}): "
                              f"{lines[-1] if lines else 'no output'}")
        return np.load(Path(tmp) / "y.npy")
