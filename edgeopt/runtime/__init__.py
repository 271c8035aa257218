"""Load an artifact folder and run it: needs numpy and the backend's runtime only."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from edgeopt.core.errors import ArtifactError
from edgeopt.core.files import sha256_file
from edgeopt.runtime.manifest import check_manifest
from edgeopt.runtime.predictor import Predictor

MANIFEST = "manifest.json"
SUPPORTED_FORMATS = (1,)
__all__ = ["Predictor", "load", "read_manifest", "verify"]


def read_manifest(path: str | os.PathLike) -> dict:
    path = Path(path)
    mpath = path / MANIFEST
    if not path.is_dir():
        raise ArtifactError(f"{path} is not an artifact folder")
    if not mpath.is_file():
        raise ArtifactError(f"{path} has no {MANIFEST}: not an edgeopt artifact")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{mpath} is not valid JSON ({exc})") from None
    except RecursionError:  # json nests by recursion: "[[[[...": no manifest is that deep
        raise ArtifactError(f"{mpath} is not valid JSON (nested too deeply)") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{mpath} must hold a JSON object, got {type(manifest).__name__}")
    if manifest.get("format_version") not in SUPPORTED_FORMATS:
        raise ArtifactError(
            f"{mpath}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this edgeopt reads {SUPPORTED_FORMATS})"
        )
    return manifest


def verify(path: str | os.PathLike, manifest: dict) -> None:
    """Check every listed file against its sha256; a tampered artifact is refused."""
    path = Path(path)
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise ArtifactError(f"artifact {path}: manifest 'files' must map names to checksums")
    _refuse_links(path)
    for name in [*files, manifest.get("model_file")]:
        if name is not None and not _inside(name):
            raise ArtifactError(f"artifact {path}: manifest names {name!r}, a path outside "
                                f"its folder (refused)")
    for name, info in files.items():
        f = path / name
        if not f.is_file():
            raise ArtifactError(f"artifact {path} is missing {name}")
        if not isinstance(info, dict) or sha256_file(f) != info.get("sha256"):
            raise ArtifactError(
                f"artifact file {f} does not match its manifest checksum (modified or corrupt)"
            )


def _inside(name: object) -> bool:
    """A relative path with no '..' part: it cannot leave the artifact folder."""
    if not isinstance(name, str) or not name or "\\" in name:
        return False
    parts = Path(name).parts
    return not Path(name).is_absolute() and ".." not in parts


def _refuse_links(path: Path) -> None:
    """A link inside an artifact could point anywhere; checksums would be of its target."""
    for root, dirs, names in os.walk(path):
        for entry in [*dirs, *names]:
            if os.path.islink(os.path.join(root, entry)):
                link = Path(root, entry).relative_to(path)
                raise ArtifactError(f"artifact {path} holds a symbolic link, {link} (refused)")


def load(path: str | os.PathLike, *, threads: int | None = None) -> Predictor:
    """Verify an artifact and return a Predictor for its backend."""
    manifest = read_manifest(path)
    verify(path, manifest)
    backend = manifest.get("backend", "")
    if not isinstance(backend, str) or not backend.isidentifier():
        # Not a name to import: "" or "a.b" would reach other modules than a backend's.
        raise ArtifactError(f"artifact {path}: manifest backend {backend!r} is not a backend "
                            "name")
    name = f"edgeopt.compile.backends.{backend}.runtime"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):  # no such backend
            raise ArtifactError(f"artifact {path} needs backend {backend!r}, "
                                f"not available") from None
        # The backend's own runtime library (TVM's) is an extra of edgeopt-runtime.
        raise ArtifactError(f"artifact {path} needs backend {backend!r}, whose runtime "
                            f"{exc.name} is not installed: install edgeopt-runtime[{backend}] "
                            f"(or edgeopt[{backend}])") from None
    check_manifest(Path(path), manifest)
    return module.PREDICTOR(Path(path), manifest, threads=threads)
