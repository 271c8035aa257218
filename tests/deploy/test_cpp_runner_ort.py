"""The C++ runner (deploy/cpp) against the Python runtime, on x86_64 and under qemu on
aarch64; and its refusals. Outputs must match edgeopt.runtime to 1e-5 (issue 13)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

import edgeopt
from edgeopt import emulate
from edgeopt.deploy import run_runner
from edgeopt.deploy.cpp import runner_command

TOL = 1e-5


def test_x86_64_runner_matches_python_runtime(runner_x86_64, int8_artifacts, images):
    art = int8_artifacts["x86_64"]
    cpp = run_runner(runner_x86_64, art, images, arch="x86_64")
    py = edgeopt.runtime.load(art).run(images)
    assert cpp.dtype == np.float32 and cpp.shape == py.shape == (64, 10)
    assert np.abs(cpp - py).max() <= TOL
    assert np.ptp(py) > 0.1  # the model says something: equal outputs are not all zeros


def test_aarch64_runner_matches_python_runtime_under_qemu(runner_aarch64, int8_artifacts,
                                                           images):
    art = int8_artifacts["aarch64"]
    cpp = run_runner(runner_aarch64, art, images, arch="aarch64")
    emulated = emulate.run_artifact(art, images)  # the Python runtime, aarch64, same ORT
    assert emulated.info["machine"] == "aarch64"
    assert cpp.shape == emulated.outputs.shape == (64, 10)
    assert np.abs(cpp - emulated.outputs).max() <= TOL


def _run(runner, *args, arch="x86_64"):
    argv, env = runner_command(runner, arch)
    return subprocess.run([*argv, *map(str, args)], env=env, capture_output=True, text=True)


def test_tampered_artifact_is_refused_in_one_line(runner_x86_64, int8_artifacts, images,
                                                  tmp_path):
    art = tmp_path / "art"
    subprocess.run(["cp", "-r", str(int8_artifacts["x86_64"]), str(art)], check=True)
    model = art / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1  # one bit
    model.write_bytes(bytes(data))
    np.save(tmp_path / "x.npy", images[:2])
    proc = _run(runner_x86_64, art, tmp_path / "x.npy", tmp_path / "y.npy")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "model.onnx does not match its manifest checksum" in proc.stderr
    assert not (tmp_path / "y.npy").exists()


@pytest.mark.parametrize("case", ["missing-file", "bad-json", "int64-input", "usage"])
def test_bad_input_exits_2_with_one_line(case, runner_x86_64, int8_artifacts, images, tmp_path):
    art = tmp_path / "art"
    subprocess.run(["cp", "-r", str(int8_artifacts["x86_64"]), str(art)], check=True)
    np.save(tmp_path / "x.npy", images[:2])
    args = [art, tmp_path / "x.npy", tmp_path / "y.npy"]
    expect = {"missing-file": "is missing model.onnx", "bad-json": "is not valid JSON",
              "int64-input": "is not float32", "usage": "usage: edgeopt-run"}[case]
    if case == "missing-file":
        (art / "model.onnx").unlink()
    elif case == "bad-json":
        (art / "manifest.json").write_text(json.dumps({"files": {}})[:-1])
    elif case == "int64-input":
        np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), dtype=np.int64))
    else:
        args = args[:2]
    proc = _run(runner_x86_64, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert expect in proc.stderr


def test_npy_round_trip_keeps_shape_and_values(runner_x86_64, int8_artifacts, images, tmp_path):
    """A single image, shape (1, 1, 8, 8): the written .npy loads with numpy as it was run."""
    art = int8_artifacts["x86_64"]
    one = run_runner(runner_x86_64, art, images[:1])
    assert one.shape == (1, 10)
    full = edgeopt.runtime.load(art).run(images[:1])
    np.testing.assert_allclose(one, full, atol=TOL, rtol=0)


def test_runner_sha256_agrees_with_hashlib_at_padding_edges(runner_x86_64, int8_artifacts,
                                                            images, tmp_path):
    """Files of every length class around SHA-256's 64-byte block and 56-byte padding limit,
    listed in the manifest: the runner accepts them all, and refuses each one changed."""
    import hashlib

    art = tmp_path / "art"
    subprocess.run(["cp", "-r", str(int8_artifacts["x86_64"]), str(art)], check=True)
    manifest = json.loads((art / "manifest.json").read_text())
    rng = np.random.default_rng(1)
    sizes = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1_000_003]
    for n in sizes:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        (art / f"extra-{n}.bin").write_bytes(data)
        manifest["files"][f"extra-{n}.bin"] = {"sha256": hashlib.sha256(data).hexdigest()}
    (art / "manifest.json").write_text(json.dumps(manifest))
    np.save(tmp_path / "x.npy", images[:1])
    proc = _run(runner_x86_64, art, tmp_path / "x.npy", tmp_path / "y.npy")
    assert proc.returncode == 0, proc.stderr
    (art / "extra-56.bin").write_bytes(b"\0" * 56)
    proc = _run(runner_x86_64, art, tmp_path / "x.npy", tmp_path / "y.npy")
    assert proc.returncode == 2 and "extra-56.bin does not match" in proc.stderr
