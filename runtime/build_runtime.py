"""PEP 517 backend of edgeopt-runtime: a pure-Python wheel of the repository's runtime files.

In-tree and standard library only, so that `pip install ./runtime` works offline and
without fetching a build tool, and the wheel holds the very files the full package runs
(listed in pyproject.toml's [tool.edgeopt-runtime] files, taken from the folder above, or
from this folder in an sdist, which carries copies).

The wheel has no ``edgeopt/__init__.py`` (nor the other package ``__init__``s on the way):
the full ``edgeopt`` distribution owns those, and without it ``edgeopt`` is a namespace
package (docs/deploying.md says why this split).
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _project() -> tuple[dict, list[str]]:
    data = tomllib.loads((HERE / "pyproject.toml").read_text())
    return data["project"], data["tool"]["edgeopt-runtime"]["files"]


def _source_root() -> Path:
    # An sdist carries the files beside pyproject.toml; a checkout has them one level up.
    return HERE if (HERE / "edgeopt").is_dir() else HERE.parent


def runtime_files(*, strict: bool = True) -> list[str]:
    """The files the wheel installs, relative to the source root, sorted. ``strict``: a
    pattern that matches nothing is an error (not so for the full package's sdist, which
    leaves them out)."""
    root = _source_root()
    _, patterns = _project()
    found = set()
    for pattern in patterns:
        matches = [p for p in root.glob(pattern) if p.is_file() and "__pycache__" not in p.parts]
        if not matches and strict:
            raise FileNotFoundError(f"edgeopt-runtime: {pattern} matches no file under {root}")
        found.update(p.relative_to(root).as_posix() for p in matches)
    return sorted(found)


def _metadata(project: dict) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}",
             f"Version: {project['version']}", f"Summary: {project['description']}",
             f"Requires-Python: {project['requires-python']}"]
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    for extra, deps in project.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {dep}; extra == "{extra}"' for dep in deps]
    return "\n".join(lines) + "\n"


def _dist_info(project: dict) -> str:
    return f"{project['name'].replace('-', '_')}-{project['version']}"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


# A fixed timestamp: the same sources give the same wheel, byte for byte.
_EPOCH = (2020, 1, 1, 0, 0, 0)


def _write_wheel(directory: str, entries: dict[str, bytes]) -> str:
    project, _ = _project()
    info = _dist_info(project)
    entries = {**entries,
               f"{info}.dist-info/METADATA": _metadata(project).encode(),
               f"{info}.dist-info/WHEEL": (b"Wheel-Version: 1.0\nGenerator: build_runtime\n"
                                           b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
               f"{info}.dist-info/top_level.txt": b"edgeopt\n"}
    record = [_record_line(name, data) for name, data in entries.items()]
    record.append(f"{info}.dist-info/RECORD,,")
    entries[f"{info}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    name = f"{info}-py3-none-any.whl"
    with zipfile.ZipFile(Path(directory) / name, "w", zipfile.ZIP_DEFLATED) as whl:
        for path, data in entries.items():
            zi = zipfile.ZipInfo(path, _EPOCH)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(zi, data)
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    root = _source_root()
    return _write_wheel(wheel_directory, {f: (root / f).read_bytes() for f in runtime_files()})


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """An editable install: a .pth putting the checkout's edgeopt first on sys.path.

    Only for a development venv that also has the full package (make setup): alone it
    would expose the whole checkout's ``edgeopt``, not the runtime's subset."""
    project, _ = _project()
    pth = f"{_source_root()}\n".encode()
    return _write_wheel(wheel_directory, {f"__editable__.{_dist_info(project)}.pth": pth})


def build_sdist(sdist_directory, config_settings=None):
    project, _ = _project()
    base = _dist_info(project)
    name = f"{base}.tar.gz"
    root = _source_root()
    members = {"pyproject.toml": HERE / "pyproject.toml",
               "build_runtime.py": HERE / "build_runtime.py",
               **{f: root / f for f in runtime_files()}}
    pkg_info = _metadata(project).encode()
    with tarfile.open(Path(sdist_directory) / name, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for arcname, path in members.items():
            tar.add(path, arcname=f"{base}/{arcname}", recursive=False)
        ti = tarfile.TarInfo(f"{base}/PKG-INFO")
        ti.size = len(pkg_info)
        tar.addfile(ti, io.BytesIO(pkg_info))
    return name


def get_requires_for_build_wheel(config_settings=None):
    return []


get_requires_for_build_sdist = get_requires_for_build_editable = get_requires_for_build_wheel
