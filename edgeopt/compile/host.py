"""Which compile targets this machine runs: the x86_64 variant its CPU runs best, and the
host build that stands in for a target it cannot run (an ARM board, a GPU, an x86 ISA
level above its own)."""

from __future__ import annotations

import platform

from edgeopt.compile.targets import Target, get_target
from edgeopt.runtime.cpu import cpu_flags


def host_isa_target() -> str:
    """The x86_64 registry entry this host's CPU runs best (its /proc/cpuinfo flags
    against each variant's ``cpu_flags`` in the registry)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return platform.machine()
    flags = cpu_flags() or set()
    for name in ("x86_64-avx512", "x86_64-avx2"):
        if set(get_target(name).cpu_flags) <= flags:
            return name
    return "x86_64"


def runs_here(t: Target) -> bool:
    if t.device != "cpu" or t.arch != platform.machine():
        return False
    host = host_isa_target()
    order = ["x86_64", "x86_64-avx2", "x86_64-avx512"]
    return t.name not in order or host not in order or order.index(t.name) <= order.index(host)


def proxy_target(t: Target) -> str:
    """The host build that stands in for a target this machine cannot run."""
    if t.arch == platform.machine() and t.device == "cpu":
        return host_isa_target()  # an x86 ISA level above the host's: the host's best
    # 128-bit SSE2 code is the nearest x86 analogue of an ARM core's 128-bit NEON.
    return "x86_64"
