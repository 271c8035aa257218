"""The host CPU's feature flags: which compiled variants it can run (stdlib only, so
every runtime, emulated arm64 ones included, can use it)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags from /proc/cpuinfo; None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / ARM spelling
            return set(value.split())
    return None


def cpu_name() -> str:
    """The CPU's model name, as the report records where its latencies were measured."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
