"""The C++ runner built with TVM (make TVM=1) on TVM fp32 and int8 artifacts: outputs match
the Python runtime to 1e-5 on x86_64, and under qemu on aarch64 (issue 13)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import edgeopt
from edgeopt import emulate
from edgeopt.deploy import DeployError, build_runner, run_runner

pytest.importorskip("tvm", reason="TVM is not installed (pip install 'edgeopt[tvm]')")

TOL = 1e-5


@pytest.fixture(scope="module")
def tvm_models(make_cnn, images):
    fp32 = make_cnn(seed=0, width=8, hidden=32)
    int8 = edgeopt.apply(fp32, edgeopt.Int8Config(), data=[images[:32], images[32:]])
    return {"fp32": fp32, "int8": int8}


def _runner(arch):
    try:
        return build_runner(arch, tvm=True)
    except (DeployError, emulate.EmulationUnavailable) as exc:
        pytest.skip(f"cannot build the {arch} TVM runner here: {exc}")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_x86_64_tvm_runner_matches_python_runtime(precision, runner_x86_64, tvm_models, images,
                                                  tmp_path):
    runner = _runner("x86_64")
    art = edgeopt.compile(tvm_models[precision], target="x86_64", backend="tvm",
                          out=tmp_path / "art", input_shape=[1, 8, 8]).path
    cpp = run_runner(runner, art, images, arch="x86_64")
    predictor = edgeopt.runtime.load(art)
    py = predictor.run(images)
    assert cpp.shape == py.shape == (64, 10)
    # The same ISA build as the Python runtime picked (manifest "libraries", best first).
    np.save(tmp_path / "x.npy", images[:1])
    proc = subprocess.run([str(runner), str(art), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and f"tvm runtime, {predictor.library}" in proc.stderr
    assert np.abs(cpp - py).max() <= TOL


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_aarch64_tvm_runner_matches_python_runtime_under_qemu(precision, aarch64_root,
                                                              tvm_models, images, tmp_path):
    try:
        emulate.ensure_root(tvm=True)
    except emulate.EmulationUnavailable as exc:
        pytest.skip(f"no TVM runtime in the arm64 root: {exc}")
    runner = _runner("aarch64")
    art = edgeopt.compile(tvm_models[precision], target="aarch64", backend="tvm",
                          out=tmp_path / "art", input_shape=[1, 8, 8]).path
    cpp = run_runner(runner, art, images, arch="aarch64")
    emulated = emulate.run_artifact(art, images)
    assert emulated.info["machine"] == "aarch64" and emulated.info["backend"] == "tvm"
    assert np.abs(cpp - emulated.outputs).max() <= TOL
