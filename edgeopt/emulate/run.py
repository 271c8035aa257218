"""Run an artifact in the emulated aarch64 user space (``root.py``) under qemu-user.

The guest's python3 runs ``runner.py``, which by default loads the artifact with
``edgeopt.runtime`` from edgeopt-runtime, copied into the root (packages.py); root.py says why qemu is called explicitly and why
the root has its own /proc/cpuinfo. A run costs ~2-3 s of qemu start and imports on
top of the inference itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.core.errors import EdgeoptError
from edgeopt.emulate.packages import runtime_site
from edgeopt.emulate.root import SITE, ensure_root, find_qemu

RUNNER = Path(__file__).with_name("runner.py")
# qemu's -cpu for a target, and the MIDR part number the fake /proc/cpuinfo reports for it.
CPUS = {"cortex-a72": "0xd08", "cortex-a76": "0xd0b", "neoverse-n1": "0xd0c",
        "cortex-a57": "0xd07", "cortex-a53": "0xd03"}
DEFAULT_CPU = "cortex-a72"  # Raspberry Pi 4: NEON, no dot-product: the common ARM floor
EM_AARCH64 = 183


class EmulationError(EdgeoptError):
    """The artifact did not run in the emulated aarch64 user space."""


def _possible_cpus() -> int:
    # The guest reads the host's /sys/devices/system/cpu/possible; cpuinfo wants one
    # /proc/cpuinfo entry per CPU listed there.
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
        return max(int(part.split("-")[-1]) for part in text.split(",")) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def write_cpuinfo(root: Path, cpu: str) -> None:
    part = CPUS.get(cpu, CPUS[DEFAULT_CPU])
    entry = ("processor\t: {i}\nBogoMIPS\t: 108.00\n"
             "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n"
             "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
             f"CPU part\t: {part}\nCPU revision\t: 3\n\n")
    text = "".join(entry.format(i=i) for i in range(_possible_cpus()))
    path = root / "proc" / "cpuinfo"
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".cpuinfo.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def python_command(root: Path, cpu: str = DEFAULT_CPU) -> tuple[list[str], dict[str, str]]:
    """argv and environment that start the root's aarch64 python3 under qemu."""
    if cpu not in CPUS and cpu != "max":
        raise EmulationError(f"unknown qemu cpu {cpu!r} (known: {', '.join([*CPUS, 'max'])})")
    write_cpuinfo(root, cpu)
    argv = [find_qemu(), "-cpu", cpu, "-L", str(root), str(root / "usr/bin/python3")]
    # A clean environment: the host venv's variables must not leak into the aarch64 Python.
    # Bytecode goes to the root's cache: compiled once, and the checkout is never written.
    # edgeopt comes from the root's copy of edgeopt-runtime only (packages.py).
    path = os.pathsep.join([str(runtime_site(root)), str(root / SITE)])
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
           "PYTHONPATH": path, "HOME": str(root / "tmp"),
           "PYTHONPYCACHEPREFIX": str(root / "var/cache/edgeopt-pyc")}
    return argv, env


def check_elf_arch(artifact: Path, manifest: dict) -> None:
    """Refuse a native library built for another machine before qemu fails obscurely."""
    for name in manifest.get("files", {}):
        path = artifact / name
        with open(path, "rb") as f:
            head = f.read(20)
        machine = int.from_bytes(head[18:20], "little")
        if head[:4] == b"\x7fELF" and machine != EM_AARCH64:
            raise EmulationError(
                f"{path} is not an aarch64 library (ELF machine {machine}); "
                "compile it with --target aarch64"
            )


@dataclass
class EmulatedRun:
    outputs: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)  # what the runner reported
    wall_s: float = 0.0  # qemu start + imports + inference


def run_artifact(artifact: str | os.PathLike, x: np.ndarray, *, root=None, threads: int = 1,
                 cpu: str = DEFAULT_CPU, standalone: bool = False,
                 timeout: float = 1800) -> EmulatedRun:
    """Run ``artifact`` on preprocessed inputs ``x`` in the emulated aarch64 user space.

    By default through ``edgeopt.runtime.load(artifact).run(x)`` (this source tree's
    runtime layer, run by the aarch64 Python); ``standalone`` uses the runner's own
    numpy + backend code instead (see runner.py)."""
    artifact = Path(artifact).resolve()
    try:
        manifest = json.loads((artifact / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise EmulationError(f"{artifact} is not an artifact folder ({exc})") from None
    check_elf_arch(artifact, manifest)
    root = ensure_root(root, tvm=manifest.get("backend") == "tvm")
    argv, env = python_command(root, cpu)
    with tempfile.TemporaryDirectory(prefix="edgeopt-emu-") as tmp:
        inputs, outputs = Path(tmp) / "x.npy", Path(tmp) / "y.npy"
        np.save(inputs, np.ascontiguousarray(x, dtype=np.float32))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [*argv, str(RUNNER), str(artifact), str(inputs), str(outputs),
                 "--threads", str(threads), *(["--standalone"] if standalone else [])],
                env=env, capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise EmulationError(f"aarch64 run of {artifact} took over {timeout:.0f}s") from None
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not outputs.is_file():
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            hint = ""
            if "tvm" in proc.stderr and "RegisterOpAttr" in proc.stderr:
                # The root has TVM's runtime only, as a device would: tvm.relax needs more.
                hint = (" (the TVM runtime code imports TVM's compiler, e.g. tvm.relax; "
                        "use tvm.runtime.vm.VirtualMachine)")
            raise EmulationError(
                f"aarch64 run of {artifact} failed (exit {proc.returncode}): "
                f"{lines[-1] if lines else 'no output'}{hint}"
            )
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        return EmulatedRun(np.load(outputs), info, wall)
