"""The emulated aarch64 user space: a Debian arm64 root with an aarch64 CPython and the
aarch64 wheels of numpy and onnxruntime (and TVM's runtime on request), kept in
``$EDGEOPT_AARCH64_ROOT`` (default ``~/.cache/edgeopt/aarch64-root``).

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
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeopt.core.errors import EdgeoptError

ROOT_ENV = "EDGEOPT_AARCH64_ROOT"
MIRROR_ENV = "EDGEOPT_DEBIAN_MIRROR"
SUITE = "bookworm"  # Python 3.11, glibc 2.36: the same Python minor as the host venv
GLIBC = (2, 36)
SITE = Path("opt/edgeopt/site")
MARKER = "edgeopt-root.json"
QEMU = ("qemu-aarch64-static", "qemu-aarch64")


class EmulationUnavailable(EdgeoptError):
    """A tool the emulation needs is missing here (and says which Debian package has it)."""


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
            "'python -m edgeopt.emulate setup' as root once, "
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
