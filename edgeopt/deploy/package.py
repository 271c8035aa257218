"""``edgeopt package DIR``: one tarball per target architecture, ready to copy to a device.

    <name>-<arch>/
      edgeopt-run              the C++ runner (deploy/cpp) for <arch>
      lib/                     the runtime it loads: libonnxruntime.so.1 (ONNX Runtime
                               artifacts) or libtvm_runtime.so + libtvm_ffi.so (TVM ones),
                               from the wheel for <arch>
      artifact/                the artifact folder as compiled, manifest and checksums
      README.txt               how to run it

Each tarball is written beside its final name and renamed, so a reader never sees half
of one; an existing one is replaced only with ``force``.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

from edgeopt.deploy.cpp import (
    ARCHES,
    BINARY,
    ORT_SONAME,
    DeployError,
    build_runner,
    ort_library,
    tvm_libraries,
)
from edgeopt.runtime import read_manifest, verify

README = """\
{name}: an edgeopt artifact ({backend}, {precision}) with its C++ runner for {arch}.

Run it on the device (Linux {arch}, glibc 2.17 or newer; nothing else to install):

    ./edgeopt-run artifact input.npy output.npy [--threads N]

input.npy: float32, C order, shaped like the model's input {shape}
(preprocessed as the manifest says: {preprocessing}).
output.npy: the model's first output, float32; further outputs go to output.1.npy, ...
The runner checks every file of artifact/ against manifest.json's sha256 first and refuses
a modified artifact (exit 2). It loads {runtime} from lib/ beside itself.
"""


def _default_arches(manifest: dict) -> list[str]:
    arch = manifest.get("arch") or manifest.get("target", "")
    return [arch] if arch in ARCHES else ["x86_64"]


def _add_file(tar: tarfile.TarFile, path: Path, arcname: str, mode: int = 0o644) -> None:
    info = tar.gettarinfo(str(path), arcname)
    info.mode, info.uid, info.gid, info.uname, info.gname = mode, 0, 0, "root", "root"
    with open(path, "rb") as f:
        tar.addfile(info, f)


def _add_text(tar: tarfile.TarFile, text: str, arcname: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(arcname)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _libraries(arch: str, backend: str) -> dict[str, Path]:
    """Name in lib/ -> the file to ship."""
    if backend == "tvm":
        return {lib.name: lib for lib in tvm_libraries(arch)}
    return {ORT_SONAME: ort_library(arch)}


def _write_tarball(dest: Path, name: str, arch: str, artifact: Path, manifest: dict,
                   runner: Path, libraries: dict[str, Path]) -> None:
    if manifest["backend"] == "tvm":
        runtime = "TVM's runtime (libtvm_runtime.so, libtvm_ffi.so)"
    else:
        version = libraries[ORT_SONAME].name.removeprefix("libonnxruntime.so.")
        runtime = (f"ONNX Runtime {version} ({ORT_SONAME}; EDGEOPT_ORT_LIB=/path/to/"
                   f"{ORT_SONAME} picks another)")
    readme = README.format(
        name=name, backend=manifest["backend"], precision=manifest.get("precision", "?"),
        arch=arch, shape=manifest["inputs"][0].get("shape"), runtime=runtime,
        preprocessing=manifest.get("preprocessing") or "none")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            _add_file(tar, runner, f"{name}/{BINARY}", 0o755)
            for lib_name, lib in libraries.items():
                _add_file(tar, lib, f"{name}/lib/{lib_name}", 0o755)
            for f in sorted(p for p in artifact.rglob("*") if p.is_file()):
                _add_file(tar, f, f"{name}/artifact/{f.relative_to(artifact)}")
            _add_text(tar, readme, f"{name}/README.txt")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def package(artifact: str | os.PathLike, out: str | os.PathLike | None = None, *,
            arches: list[str] | None = None, force: bool = False,
            runners: dict[str, str | os.PathLike] | None = None) -> list[Path]:
    """Write ``<out>/<artifact name>-<arch>.tar.gz`` per arch; returns their paths.

    ``runners`` maps an arch to a built runner binary; others are built from deploy/cpp.
    """
    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    verify(artifact, manifest)  # never ship a tampered artifact
    backend = manifest.get("backend")
    if backend not in ("onnxruntime", "tvm"):
        raise DeployError(f"artifact {artifact} needs backend {backend!r}: the C++ runner runs "
                          "ONNX Runtime and TVM artifacts")
    arches = arches or _default_arches(manifest)
    for arch in arches:
        if arch not in ARCHES:
            raise DeployError(f"no C++ runner for {arch!r} (known: {', '.join(ARCHES)})")
        built_for = manifest.get("arch") or manifest.get("target")
        if backend == "tvm" and arch != built_for:
            raise DeployError(f"artifact {artifact} is a TVM library for {built_for}: it cannot "
                              f"run on {arch} (compile it with --target {arch})")
    out = Path(out) if out is not None else artifact.parent
    out.mkdir(parents=True, exist_ok=True)
    name = artifact.resolve().name
    dests = {arch: out / f"{name}-{arch}.tar.gz" for arch in arches}
    for dest in dests.values():
        if dest.exists() and not force:
            raise DeployError(f"{dest} exists (use --force to replace it)")
    written = []
    for arch, dest in dests.items():
        given = (runners or {}).get(arch)
        runner = Path(given) if given else build_runner(arch, tvm=backend == "tvm")
        if not runner.is_file():
            raise DeployError(f"no runner binary at {runner}")
        _write_tarball(dest, f"{name}-{arch}", arch, artifact, manifest, runner,
                       _libraries(arch, backend))
        written.append(dest)
    return written
