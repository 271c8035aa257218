"""Run aarch64 artifacts on this x86_64 machine: qemu-user and a Debian arm64 root.

The proof that an aarch64 artifact runs (issue 4) needs aarch64 code executing real
aarch64 runtimes, not the host's. This module keeps a small Debian arm64 user space
(``$EDGEOPT_AARCH64_ROOT``, default ``~/.cache/edgeopt/aarch64-root``) holding an aarch64
CPython plus the aarch64 wheels of numpy and onnxruntime (and TVM's runtime on request),
and runs ``emulated_runner.py`` in it under ``qemu-aarch64-static``.

How the root is made, and why this way:

* ``debootstrap --foreign --arch=arm64 --variant=minbase --include=python3`` downloads the
  arm64 packages and unpacks only the essential ones. Its second stage would have to run
  arm64 maintainer scripts inside a chroot, which needs binfmt_misc (absent in containers),
  so instead every downloaded .deb is unpacked with ``dpkg-deb -x``. Python needs no
  maintainer script to run.
* The wheels are installed by the host's pip with ``--platform manylinux_*_aarch64
  --target``: pip never runs under emulation, and the versions match the host's, so both
  builds are compared with the same runtime release.
* qemu is called explicitly (``qemu-aarch64-static -L ROOT ROOT/usr/bin/python3``), so no
  binfmt_misc and no chroot (hence no root privileges) are needed to *run*. ``-L`` makes
  the guest see ROOT's files first and the host's otherwise, so artifact paths just work.
* ``ROOT/proc/cpuinfo`` holds an ARM cpuinfo: under qemu-user the guest would read the
  host's x86 /proc/cpuinfo, and onnxruntime's cpuinfo library segfaults parsing it
  (seen with onnxruntime 1.31 under qemu 7.2).

Setup cost, measured on the 2-core CI machine from the Debian mirror and the local PyPI:
~20 s debootstrap + ~5 s unpack + ~6 s pip (numpy + onnxruntime), ~270 MB on disk; TVM's
runtime (``tvm=True``; its 95 MB wheel less the compiler library) adds ~10 s and ~65 MB.
A run then costs ~2-3 s of qemu start and imports on top of the inference itself.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.core.errors import EdgeoptError

ROOT_ENV = "EDGEOPT_AARCH64_ROOT"
MIRROR_ENV = "EDGEOPT_DEBIAN_MIRROR"
SUITE = "bookworm"  # Python 3.11, glibc 2.36: the same Python minor as the host venv
GLIBC = (2, 36)
SITE = Path("opt/edgeopt/site")
MARKER = "edgeopt-root.json"
RUNNER = Path(__file__).with_name("emulated_runner.py")
QEMU = ("qemu-aarch64-static", "qemu-aarch64")
# qemu's -cpu for a target, and the MIDR part number the fake /proc/cpuinfo reports for it.
CPUS = {"cortex-a72": "0xd08", "cortex-a76": "0xd0b", "neoverse-n1": "0xd0c",
        "cortex-a57": "0xd07", "cortex-a53": "0xd03"}
DEFAULT_CPU = "cortex-a72"  # Raspberry Pi 4: NEON, no dot-product: the common ARM floor
EM_AARCH64 = 183


class EmulationUnavailable(EdgeoptError):
    """A tool the emulation needs is missing here (and says which Debian package has it)."""


class EmulationError(EdgeoptError):
    """The artifact did not run in the emulated aarch64 user space."""


def default_root() -> Path:
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser()
    cache = os.environ.get("EDGEOPT_CACHE")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache" / "edgeopt") / (
        "aarch64-root"
    )


def _which(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EmulationUnavailable(f"{name} not found: install it with apt-get install {package}")
    return path


def find_qemu() -> str:
    for name in QEMU:
        if path := shutil.which(name):
            return path
    raise EmulationUnavailable(
        "qemu-aarch64-static not found: install it with apt-get install qemu-user-static"
    )


def cross_compiler(lang: str = "g++") -> str:
    """Path of Debian's aarch64 cross compiler (``gcc`` or ``g++``), or a one-line error."""
    return _which(f"aarch64-linux-gnu-{lang}", f"{lang}-aarch64-linux-gnu")


def wanted_packages(tvm: bool = False) -> dict[str, str]:
    """The aarch64 wheels to install: the host's versions, so both builds run one release."""
    names = ["numpy", "onnxruntime"] + (["apache-tvm", "apache-tvm-ffi"] if tvm else [])
    wanted = {}
    for name in names:
        try:
            wanted[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            wanted[name] = ""  # not on the host: the newest aarch64 wheel will do
    return wanted


def read_marker(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _satisfied(have: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(name in have and (not v or have[name] == v) for name, v in wanted.items())


@contextmanager
def _lock(root: Path):
    # Several pytest workers (or CI and a developer) may ask for the root at once.
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def debian_mirror() -> str:
    """The Debian mirror apt uses here (a local mirror/snapshot if configured)."""
    if os.environ.get(MIRROR_ENV):
        return os.environ[MIRROR_ENV]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for src in sources:
        try:
            text = src.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            url = None
            if line.startswith("URIs:") and len(words) > 1:
                url = words[1]
            elif words[:1] == ["deb"]:
                url = next((w for w in words[1:] if "://" in w), None)
            if url and url.rstrip("/").endswith("/debian"):
                return url
    return "http://deb.debian.org/debian"


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise EmulationUnavailable(
            f"{what} failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}"
        )
    return proc


def _bootstrap(dest: Path, log) -> None:
    """Unpack a minimal Debian arm64 system with python3 into ``dest``."""
    debootstrap = _which("debootstrap", "debootstrap")
    _which("dpkg-deb", "dpkg")
    if os.geteuid() != 0:
        raise EmulationUnavailable(
            "creating the aarch64 root needs root (debootstrap): run "
            "'python -m edgeopt.compile.emulate setup' as root once, "
            f"or point {ROOT_ENV} at an existing root"
        )
    mirror = debian_mirror()
    t0 = time.perf_counter()
    _run([debootstrap, "--arch=arm64", "--foreign", "--variant=minbase", "--include=python3",
          SUITE, str(dest), mirror], f"debootstrap --arch=arm64 {SUITE} from {mirror}")
    log(f"debootstrap: {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    archives = dest / "var/cache/apt/archives"
    for deb in sorted(archives.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(dest)], f"dpkg-deb -x {deb.name}")
        deb.unlink()  # 40 MB of .debs nothing reads again
    # Docs, translations and apt's 47 MB package lists: nothing in the root reads them.
    for junk in ("usr/share/doc", "usr/share/locale", "usr/share/man", "usr/share/info",
                 "var/lib/apt/lists"):
        shutil.rmtree(dest / junk, ignore_errors=True)
    if not (dest / "usr/bin/python3").exists():
        raise EmulationUnavailable(f"the {SUITE} arm64 root has no usr/bin/python3")
    log(f"unpack: {time.perf_counter() - t0:.1f}s")


def guest_python_version(root: Path) -> str:
    """``3.11`` for bookworm: read off the interpreter the root's python3 points to."""
    target = os.readlink(root / "usr/bin/python3") if (root / "usr/bin/python3").is_symlink() \
        else "python3"
    version = target.removeprefix("python")
    if not version.count("."):
        raise EmulationUnavailable(f"cannot tell the Python version of {root}/usr/bin/python3")
    return version


def _install_site(root: Path, wanted: dict[str, str], log) -> None:
    """pip-install the aarch64 wheels into ``ROOT/opt/edgeopt/site`` (replacing it)."""
    pyver = guest_python_version(root)
    platforms = ["manylinux2014_aarch64"] + [
        f"manylinux_2_{minor}_aarch64" for minor in range(17, GLIBC[1] + 1)
    ]
    site = root / SITE
    site.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".site.", dir=site.parent))
    specs = [f"{n}=={v}" if v else n for n, v in wanted.items()]
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--target", str(tmp), "--only-binary=:all:", "--implementation", "cp",
           "--python-version", pyver, *[f"--platform={p}" for p in platforms], *specs]
    if f"{sys.version_info[0]}.{sys.version_info[1]}" != pyver:
        cmd.insert(4, "--no-compile")  # the host would write .pyc for the wrong Python
    t0 = time.perf_counter()
    try:
        _run(cmd, f"pip install of aarch64 wheels ({' '.join(specs)})")
        # The 240 MB compiler library is never loaded: the runner uses TVM_USE_RUNTIME_LIB=1.
        for lib in tmp.glob("tvm/lib/libtvm_compiler*.so"):
            lib.unlink()
        shutil.rmtree(site, ignore_errors=True)
        os.replace(tmp, site)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"pip aarch64 wheels: {time.perf_counter() - t0:.1f}s")


def ensure_root(root: str | os.PathLike | None = None, *, tvm: bool = False,
                log=lambda msg: None) -> Path:
    """The aarch64 root, created (or its wheels brought to the host's versions) if needed."""
    root = Path(root) if root is not None else default_root()
    wanted = wanted_packages(tvm)
    marker = read_marker(root)
    if marker and _satisfied(marker.get("packages", {}), wanted):
        return root
    with _lock(root):
        marker = read_marker(root)  # another process may have finished it meanwhile
        if marker and _satisfied(marker.get("packages", {}), wanted):
            return root
        if marker is None:
            if root.exists() and any(root.iterdir()):
                # Never delete a folder this module did not make (a user's own root).
                raise EmulationUnavailable(
                    f"{root} exists but is not an edgeopt aarch64 root (no {MARKER}); "
                    f"remove it or set {ROOT_ENV} to another folder"
                )
            # Build beside the destination and rename: never a half-made root in place.
            staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
            try:
                _bootstrap(staging, log)
                marker = {"suite": SUITE, "python": guest_python_version(staging),
                          "packages": {}}
                _write_marker(staging, marker)  # a failed pip step below is retried later
                shutil.rmtree(root, ignore_errors=True)  # an empty folder, if any
                os.replace(staging, root)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        # A root that once had TVM keeps it, at the host's version like the rest.
        wanted = wanted_packages(tvm or "apache-tvm" in marker["packages"])
        _install_site(root, wanted, log)
        marker["packages"] = _installed_versions(root / SITE, wanted)
        _write_marker(root, marker)
    return root


def _write_marker(root: Path, marker: dict) -> None:
    tmp = root / f".{MARKER}.{os.getpid()}"
    tmp.write_text(json.dumps(marker, indent=2))
    os.replace(tmp, root / MARKER)


def _installed_versions(site: Path, names) -> dict[str, str]:
    found = {}
    for dist in metadata.distributions(path=[str(site)]):
        found[dist.metadata["Name"].lower().replace("_", "-")] = dist.version
    return {n: found.get(n.lower(), "") for n in names}


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
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
           "PYTHONPATH": str(root / SITE), "HOME": str(root / "tmp"),
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
    numpy + backend code instead (see emulated_runner.py)."""
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeopt.compile.emulate",
                                 description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup", help="create/update the aarch64 root")
    s.add_argument("--tvm", action="store_true", help="also install TVM's aarch64 runtime")
    s.add_argument("--root", default=None)
    r = sub.add_parser("run", help="run an artifact on an .npy of inputs under emulation")
    r.add_argument("artifact")
    r.add_argument("inputs")
    r.add_argument("outputs")
    r.add_argument("--root", default=None)
    r.add_argument("--cpu", default=DEFAULT_CPU)
    r.add_argument("--standalone", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "setup":
            t0 = time.perf_counter()
            root = ensure_root(args.root, tvm=args.tvm, log=print)
            size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()
                       and not p.is_symlink())
            print(f"aarch64 root {root}: {read_marker(root)['packages']} "
                  f"({size / 2**20:.0f} MB, {time.perf_counter() - t0:.1f}s)")
        else:
            run = run_artifact(args.artifact, np.load(args.inputs), root=args.root, cpu=args.cpu,
                               standalone=args.standalone)
            np.save(args.outputs, run.outputs)
            print(json.dumps({**run.info, "wall_s": round(run.wall_s, 2)}))
    except EdgeoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
