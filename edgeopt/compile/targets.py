"""Targets: where an artifact will run, and which backends/precisions serve it.

Each entry names, per backend, the precision families it can build (see
``precision_family``), and for TVM the target it compiles for. TVM 0.27 takes
targets as dicts only (its "llvm -mcpu=..." string form was removed); ``tvm_string``
renders the familiar string for listings and messages.

The generic ``x86_64`` TVM build dispatches at load time, as oneDNN and ONNX Runtime
do: its artifact also holds the libraries of the targets named in ``dispatch``, and
the runtime loads the best one whose ``cpu_flags`` the host has. ``x86_64-baseline``
is the same portable target without the variants (one build instead of three).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeopt.core.errors import ConfigError

_ORT = ("fp32", "int8", "lowbit")
# TVM runs sub-8-bit weights from int8 containers (no packed storage yet): lowbit works,
# it just does not shrink the file below int8.
_TVM_CPU = ("fp32", "int8", "lowbit")
_TVM_CUDA = ("fp32", "fp16")


def _llvm(triple: str, mcpu: str | None = None, mattr: list[str] | None = None) -> dict[str, Any]:
    target: dict[str, Any] = {"kind": "llvm", "mtriple": triple}
    if mcpu:
        target["mcpu"] = mcpu
    if mattr:
        target["mattr"] = mattr
    return target


def _cuda(arch: str | None, host: dict[str, Any]) -> dict[str, Any]:
    target: dict[str, Any] = {"kind": "cuda", "host": host}
    if arch:
        target["arch"] = arch
    return target


_X86 = "x86_64-linux-gnu"
_A64 = "aarch64-linux-gnu"
# /proc/cpuinfo flags of LLVM's x86-64-v3 and -v4 levels (lzcnt is reported as abm).
_X86_V3_FLAGS = ("ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf_lm", "avx", "avx2",
                 "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "xsave")
_X86_V4_FLAGS = (*_X86_V3_FLAGS, "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
_X86_DESC = "any x86-64 CPU (SSE2 baseline)"


@dataclass(frozen=True)
class Target:
    name: str
    arch: str  # the CPU the artifact's host code runs on (platform.machine() spelling)
    support: dict[str, tuple[str, ...]]  # backend -> precision families
    description: str
    aliases: tuple[str, ...] = ()
    tvm: dict[str, Any] | None = None  # TVM target (dict form)
    vector_bits: int = 128  # widest SIMD register the target promises (CPU schedules)
    device: str = "cpu"  # where the compiled code runs: cpu or cuda
    cross_compiler: str | None = None  # gcc that links a TVM library for this arch
    cross_package: str | None = None  # the Debian package providing it
    # The CPU features the compiled code needs beyond the arch's baseline (/proc/cpuinfo
    # spelling), and the short name of that level in an artifact's list of libraries.
    cpu_flags: tuple[str, ...] = ()
    isa: str = "baseline"
    # Targets also built into a TVM artifact for this one, best first; the runtime loads
    # the best library this CPU runs (the target's own build is the fallback).
    dispatch: tuple[str, ...] = ()

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(self.support)

    @property
    def precisions(self) -> tuple[str, ...]:
        """Every precision family some backend of this target builds."""
        seen: list[str] = []
        for precs in self.support.values():
            seen += [p for p in precs if p not in seen]
        return tuple(seen)

    def tvm_string(self) -> str:
        return tvm_string(self.tvm) if self.tvm else ""

    def combinations(self) -> str:
        return "; ".join(f"{b}: {', '.join(p)}" for b, p in self.support.items())

    def check(self, backend: str, precision: str) -> None:
        family = precision_family(precision)
        if backend not in self.support:
            raise ConfigError(
                f"target {self.name} has no backend {backend!r} "
                f"(available: {', '.join(self.backends)})"
            )
        if family not in self.support[backend]:
            raise ConfigError(
                f"target {self.name} does not support precision {precision!r} with {backend} "
                f"(supported: {self.combinations()})"
            )


def tvm_string(target: dict[str, Any]) -> str:
    """``{"kind": "llvm", "mcpu": "x"}`` -> ``llvm -mcpu=x`` (for humans; TVM wants the dict)."""
    parts = [target["kind"]]
    for key, value in target.items():
        if key in ("kind", "host"):
            continue
        value = ",".join(value) if isinstance(value, list) else value
        parts.append(f"-{key}={value}")
    text = " ".join(parts)
    if "host" in target:
        text += f" (host: {tvm_string(target['host'])})"
    return text


def precision_family(label: str) -> str:
    """fp32 / int8 / lowbit: what a target must support to run a model labelled
    ``label`` (w4a8, w4pow2a8 and mixed widths are all lowbit: packed weights)."""
    return label if label in ("fp32", "fp16", "int8") else "lowbit"


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("x86_64", "x86_64", {"onnxruntime": _ORT, "tvm": _TVM_CPU},
               f"{_X86_DESC}; ONNX Runtime QDQ kernels, or TVM libraries for SSE2, AVX2 "
               f"and AVX-512 of which the runtime loads the best this CPU runs",
               aliases=("x86", "amd64"), tvm=_llvm(_X86, "x86-64"),
               dispatch=("x86_64-avx512", "x86_64-avx2")),
        Target("x86_64-baseline", "x86_64", {"tvm": _TVM_CPU},
               f"{_X86_DESC}; one portable TVM library (x86_64 without the AVX2/AVX-512 "
               f"variants: a third of the build time)", aliases=("x86-64-v1",),
               tvm=_llvm(_X86, "x86-64")),
        Target("x86_64-avx2", "x86_64", {"onnxruntime": _ORT, "tvm": _TVM_CPU},
               "x86-64 with AVX2/FMA (Haswell, Zen and later)", aliases=("x86-64-v3",),
               tvm=_llvm(_X86, "x86-64-v3"), vector_bits=256, cpu_flags=_X86_V3_FLAGS,
               isa="avx2"),
        Target("x86_64-avx512", "x86_64", {"onnxruntime": _ORT, "tvm": _TVM_CPU},
               "x86-64 with AVX-512 (Skylake-SP, Zen 4 and later)", aliases=("x86-64-v4",),
               tvm=_llvm(_X86, "x86-64-v4"), vector_bits=512, cpu_flags=_X86_V4_FLAGS,
               isa="avx512"),
        Target("aarch64", "aarch64", {"onnxruntime": _ORT, "tvm": _TVM_CPU},
               "64-bit ARM CPU, generic ARMv8-A with NEON", aliases=("arm64",),
               tvm=_llvm(_A64, "generic", ["+neon"]),
               cross_compiler="aarch64-linux-gnu-gcc", cross_package="gcc-aarch64-linux-gnu"),
        Target("rpi4", "aarch64", {"onnxruntime": _ORT, "tvm": _TVM_CPU},
               "Raspberry Pi 4 (Cortex-A72)", aliases=("raspberry-pi-4",),
               tvm=_llvm(_A64, "cortex-a72", ["+neon"]),
               cross_compiler="aarch64-linux-gnu-gcc", cross_package="gcc-aarch64-linux-gnu"),
        Target("rpi5", "aarch64", {"onnxruntime": _ORT, "tvm": _TVM_CPU},
               "Raspberry Pi 5 (Cortex-A76, dot-product instructions)",
               aliases=("raspberry-pi-5",), tvm=_llvm(_A64, "cortex-a76", ["+neon", "+dotprod"]),
               cross_compiler="aarch64-linux-gnu-gcc", cross_package="gcc-aarch64-linux-gnu"),
        Target("jetson-orin", "aarch64", {"tvm": _TVM_CUDA},
               "NVIDIA Jetson Orin (CUDA sm_87, Cortex-A78AE host)", aliases=("orin",),
               tvm=_cuda("sm_87", _llvm(_A64, "cortex-a78ae")), device="cuda",
               cross_compiler="aarch64-linux-gnu-gcc", cross_package="gcc-aarch64-linux-gnu"),
        Target("cuda", "x86_64", {"tvm": _TVM_CUDA},
               "NVIDIA GPU on an x86-64 host (CUDA arch of the build machine's GPU)",
               aliases=("gpu", "nvidia"), tvm=_cuda(None, _llvm(_X86, "x86-64")),
               device="cuda"),
    )
}


def get_target(name: str) -> Target:
    for t in TARGETS.values():
        if name == t.name or name in t.aliases:
            return t
    raise ConfigError(f"unknown target {name!r} (known: {', '.join(TARGETS)})")
