"""``edgeopt package``: the tarballs unpack and run on their own, on x86_64 here and inside
the arm64 root under qemu (issue 13), and are written atomically, never over a file."""

from __future__ import annotations

import subprocess
import tarfile

import numpy as np
import pytest

import edgeopt
from edgeopt import emulate
from edgeopt.cli import main
from edgeopt.deploy import DeployError, package
from edgeopt.emulate.run import DEFAULT_CPU, write_cpuinfo

TOL = 1e-5


def _unpack(tarball, dest):
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    (top,) = list(dest.iterdir())
    return top


def test_x86_64_tarball_runs_on_its_own(runner_x86_64, int8_artifacts, images, tmp_path):
    art = int8_artifacts["x86_64"]
    (tarball,) = package(art, tmp_path / "out", arches=["x86_64"])
    assert tarball.name == f"{art.name}-x86_64.tar.gz"
    top = _unpack(tarball, tmp_path / "device")
    assert {p.name for p in top.iterdir()} == {"edgeopt-run", "lib", "artifact", "README.txt"}
    assert "./edgeopt-run artifact input.npy output.npy" in (top / "README.txt").read_text()
    np.save(top / "input.npy", images)
    # No EDGEOPT_ORT_LIB: the runner finds lib/libonnxruntime.so.1 beside itself.
    proc = subprocess.run(["./edgeopt-run", "artifact", "input.npy", "output.npy"], cwd=top,
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    py = edgeopt.runtime.load(art).run(images)
    assert np.abs(np.load(top / "output.npy") - py).max() <= TOL


def test_aarch64_tarball_runs_in_the_arm64_root(runner_aarch64, aarch64_root, int8_artifacts,
                                                images, tmp_path):
    art = int8_artifacts["aarch64"]
    (tarball,) = package(art, tmp_path, arches=["aarch64"])
    # Unpacked inside the root, as on a device, and run there with the root's own libc.
    dest = aarch64_root / "tmp" / f"edgeopt-package-test-{tmp_path.name}"
    dest.mkdir(parents=True)
    try:
        top = _unpack(tarball, dest)
        np.save(top / "input.npy", images)
        write_cpuinfo(aarch64_root, DEFAULT_CPU)
        proc = subprocess.run(
            [emulate.find_qemu(), "-cpu", DEFAULT_CPU, "-L", str(aarch64_root),
             str(top / "edgeopt-run"), "artifact", "input.npy", "output.npy"],
            cwd=top, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "onnxruntime 1." in proc.stderr
        expected = emulate.run_artifact(art, images).outputs
        assert np.abs(np.load(top / "output.npy") - expected).max() <= TOL
    finally:
        subprocess.run(["rm", "-rf", str(dest)], check=True)


def test_cli_refuses_to_overwrite_without_force(runner_x86_64, int8_artifacts, tmp_path,
                                                capsys):
    art = int8_artifacts["x86_64"]
    out = tmp_path / "out"
    assert main(["package", str(art), "--target", "x86_64", "--out", str(out),
                 "--runner", f"x86_64={runner_x86_64}"]) == 0
    tarball = out / f"{art.name}-x86_64.tar.gz"
    assert capsys.readouterr().out.strip() == str(tarball)
    before = tarball.stat().st_mtime_ns
    assert main(["package", str(art), "--target", "x86_64", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "exists (use --force" in err
    assert tarball.stat().st_mtime_ns == before
    assert main(["package", str(art), "--target", "x86_64", "--out", str(out), "--force"]) == 0
    assert [p.name for p in out.iterdir()] == [tarball.name]  # no temporary left behind


def test_tampered_artifact_is_not_packaged(int8_artifacts, tmp_path):
    art = tmp_path / "art"
    subprocess.run(["cp", "-r", str(int8_artifacts["x86_64"]), str(art)], check=True)
    with open(art / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(edgeopt.core.errors.ArtifactError, match="manifest checksum"):
        package(art, tmp_path / "out", arches=["x86_64"])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_arch_is_one_clear_error(int8_artifacts, tmp_path):
    with pytest.raises(DeployError, match="no C\\+\\+ runner for 'riscv64'"):
        package(int8_artifacts["x86_64"], tmp_path, arches=["riscv64"])


def test_tvm_tarball_runs_on_its_own(runner_x86_64, make_cnn, images, tmp_path):
    pytest.importorskip("tvm", reason="TVM is not installed (pip install 'edgeopt[tvm]')")
    art = edgeopt.compile(make_cnn(seed=0, width=8, hidden=32), target="x86_64", backend="tvm",
                          out=tmp_path / "tvm-art", input_shape=[1, 8, 8]).path
    try:
        (tarball,) = package(art, tmp_path / "out")
    except DeployError as exc:
        pytest.skip(f"cannot build the TVM runner here: {exc}")
    top = _unpack(tarball, tmp_path / "device")
    assert {p.name for p in (top / "lib").iterdir()} == {"libtvm_runtime.so", "libtvm_ffi.so"}
    np.save(top / "input.npy", images)
    proc = subprocess.run(["./edgeopt-run", "artifact", "input.npy", "output.npy"], cwd=top,
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    py = edgeopt.runtime.load(art).run(images)
    assert np.abs(np.load(top / "output.npy") - py).max() <= TOL
    with pytest.raises(DeployError, match="TVM library for x86_64: it cannot run on aarch64"):
        package(art, tmp_path / "out2", arches=["aarch64"])
