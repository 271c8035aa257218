"""edgeopt-runtime for the emulated aarch64 Python: its files, copied into the root.

The guest imports ``edgeopt.runtime`` from this copy alone (no checkout on its path, no
stubs), so a run proves the distribution a device would install. The files are those of the
installed edgeopt-runtime; in a development install (editable, whose record lists none),
those runtime/pyproject.toml names in the checkout. A pure-Python package needs no pip under
qemu: it is copied, to ``ROOT/opt/edgeopt/runtime/<hash of the files>``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from importlib import metadata
from pathlib import Path

from edgeopt.emulate.root import EmulationUnavailable

DISTRIBUTION = "edgeopt-runtime"
CHECKOUT = Path(__file__).resolve().parents[2]


def runtime_files() -> dict[str, Path]:
    """edgeopt-runtime's modules: {path relative to site-packages: file here}."""
    try:
        record = metadata.files(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        record = []
    found = {f.as_posix(): Path(f.locate()) for f in record
             if f.as_posix().startswith("edgeopt/") and f.suffix == ".py"}
    if found:
        return found
    backend = CHECKOUT / "runtime" / "build_runtime.py"
    if not backend.is_file():
        raise EmulationUnavailable(f"{DISTRIBUTION} is not installed (pip install "
                                   f"{DISTRIBUTION}, or ./runtime in a checkout)")
    spec = importlib.util.spec_from_file_location("build_runtime", backend)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {rel: CHECKOUT / rel for rel in module.runtime_files()}


def runtime_site(root: Path) -> Path:
    """The folder in ``root`` that holds edgeopt-runtime (copied once per content)."""
    files = runtime_files()
    h = hashlib.sha256()
    for rel, path in sorted(files.items()):
        h.update(rel.encode() + b"\0" + path.read_bytes())
    dest = root / "opt/edgeopt/runtime" / h.hexdigest()[:16]
    if (dest / ".complete").is_file():
        return dest
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, path in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, tmp / rel)
    (tmp / ".complete").write_text(f"{DISTRIBUTION}: {len(files)} files\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest
