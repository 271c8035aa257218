"""aarch64 artifacts run for real (issue 4): the aarch64 build is executed by aarch64
runtimes in a Debian arm64 user space under qemu-user, and its predictions are compared
with the x86_64 build's on 1,000 test images.

The first run builds the arm64 root (~35 s, ~330 MB in ~/.cache/edgeopt/aarch64-root);
later runs reuse it. Tests skip, saying why, only when the tools cannot be had here.
To prove another backend, add a row to CASES (see ``build_pair`` and ``assert_agrees``).
"""

from __future__ import annotations

import json
import re
import shutil
import time

import numpy as np
import pytest
import torch

import edgeopt
from edgeopt import emulate
from edgeopt.compile.targets import get_target
from edgeopt.core.data import load_dataset
from edgeopt.core.errors import EdgeoptError

INPUT_SHAPE = [1, 8, 8]
N_TEST = 1000
MIN_AGREEMENT = 0.999


@pytest.fixture(scope="session")
def aarch64_root():
    try:
        emulate.find_qemu()
        return emulate.ensure_root()
    except emulate.EmulationUnavailable as exc:
        pytest.skip(f"aarch64 emulation unavailable here: {exc}")


@pytest.fixture(scope="module")
def digits():
    """Train/test split of sklearn's digits (8x8), test set cut to 1,000 images."""
    data = load_dataset("digits", seed=0, test_fraction=0.6)
    x_train = (data.train.x.astype(np.float32) / 255.0)
    x_test = (data.test.x.astype(np.float32) / 255.0)[:N_TEST]
    assert len(x_test) == N_TEST
    return x_train, data.train.y, x_test


@pytest.fixture(scope="module")
def trained_cnn(make_cnn, digits, train_tiny):
    """A TinyCNN trained for a second on digits: real, well-separated decisions, so the
    comparison measures the runtimes rather than coin-flips between tied random logits."""
    x, y, _ = digits
    torch.manual_seed(0)
    return train_tiny(make_cnn(seed=0, width=8, hidden=32), x, y, epochs=15)


def build_pair(model, backend: str, out) -> tuple:
    """The same model compiled for aarch64 and for x86_64 with one backend."""
    kw = {"backend": backend, "input_shape": INPUT_SHAPE}
    a64 = edgeopt.compile(model, target="aarch64", out=out / f"{backend}-aarch64", **kw)
    x86 = edgeopt.compile(model, target="x86_64", out=out / f"{backend}-x86_64", **kw)
    return a64.path, x86.path


def assert_agrees(a64_dir, x86_dir, x: np.ndarray, **emulation) -> dict:
    """Run the aarch64 artifact under emulation (``emulation``: cpu, standalone) and the
    x86_64 one here; argmax agreement must reach MIN_AGREEMENT. Returns the numbers."""
    t0 = time.perf_counter()
    emulated = emulate.run_artifact(a64_dir, x, **emulation)
    emu_s = time.perf_counter() - t0
    host = edgeopt.runtime.load(x86_dir).run(x)
    assert emulated.info["machine"] == "aarch64"  # it really ran as aarch64 code
    assert emulated.outputs.shape == host.shape
    agree = float((emulated.outputs.argmax(1) == host.argmax(1)).mean())
    stats = {"agreement": agree, "max_abs_diff": float(np.abs(emulated.outputs - host).max()),
             "emulated_wall_s": round(emu_s, 2), **emulated.info}
    print(json.dumps(stats))  # visible with pytest -s; the closing note quotes it
    assert agree >= MIN_AGREEMENT, stats
    return stats


def _fp32(model, calib):
    return model


def _int8(model, calib):
    return edgeopt.apply(model, edgeopt.Int8Config(), data=calib)


# id -> (backend, model maker, emulation options). Cortex-A72 (Raspberry Pi 4) has no
# dot-product instructions and Cortex-A76 (Pi 5) has them: ONNX Runtime picks different
# int8 kernels on each. The TVM rows run as soon as the targets list the tvm backend.
CASES = {
    "onnxruntime-fp32": ("onnxruntime", _fp32, {}),
    "onnxruntime-int8": ("onnxruntime", _int8, {}),
    "onnxruntime-int8-a76": ("onnxruntime", _int8, {"cpu": "cortex-a76"}),
    "onnxruntime-fp32-standalone": ("onnxruntime", _fp32, {"standalone": True}),
    "tvm-fp32": ("tvm", _fp32, {}),
    "tvm-int8": ("tvm", _int8, {}),
}


def _backend_missing(backend: str) -> str | None:
    missing = [t for t in ("aarch64", "x86_64") if backend not in get_target(t).backends]
    return f"backend {backend} is not offered for {', '.join(missing)} yet" if missing else None


@pytest.mark.parametrize("case", list(CASES))
def test_aarch64_build_agrees_with_x86_64(case, aarch64_root, trained_cnn, digits, tmp_path):
    backend, make, emulation = CASES[case]
    if reason := _backend_missing(backend):
        pytest.skip(reason)
    x_train, _, x_test = digits
    model = make(trained_cnn, [x_train[i : i + 64] for i in range(0, 256, 64)])
    a64, x86 = build_pair(model, backend, tmp_path)
    stats = assert_agrees(a64, x86, x_test, **emulation)
    assert stats["backend"] == backend
    # By default the aarch64 Python ran edgeopt.runtime itself, not a copy of it.
    assert stats["runner"].startswith("standalone" if emulation.get("standalone") else "edgeopt ")


def test_emulated_runner_refuses_a_tampered_artifact(aarch64_root, tiny_cnn, tmp_path):
    art = edgeopt.compile(tiny_cnn, target="aarch64", input_shape=INPUT_SHAPE, out=tmp_path / "a")
    with open(art.path / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(emulate.EmulationError, match="checksum"):
        emulate.run_artifact(art.path, np.zeros((1, *INPUT_SHAPE), np.float32))


def test_an_x86_64_library_is_refused_before_emulation(tmp_path):
    art = tmp_path / "art"
    art.mkdir()
    shutil.copy("/bin/true", art / "model.so")  # an x86_64 ELF, as a wrong-target TVM build
    (art / "manifest.json").write_text(json.dumps({"backend": "tvm", "files": {"model.so": {}}}))
    with pytest.raises(emulate.EmulationError, match="not an aarch64 library"):
        emulate.run_artifact(art, np.zeros((1, *INPUT_SHAPE), np.float32))


@pytest.mark.parametrize("tool, package", [
    ("find_qemu", "qemu-user-static"),
    ("cross_compiler", "g++-aarch64-linux-gnu"),
])
def test_missing_tool_names_its_debian_package(monkeypatch, tool, package):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    pattern = re.escape(f"apt-get install {package}")
    with pytest.raises(emulate.EmulationUnavailable, match=pattern) as exc:
        getattr(emulate, tool)()
    assert isinstance(exc.value, EdgeoptError) and "\n" not in str(exc.value)


def test_missing_debootstrap_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(emulate.EmulationUnavailable, match="apt-get install debootstrap"):
        emulate.ensure_root(tmp_path / "root")
    assert not (tmp_path / "root").exists()  # nothing half-made


def test_a_folder_that_is_not_an_edgeopt_root_is_never_deleted(tmp_path):
    mine = tmp_path / "my-arm64-root"
    (mine / "etc").mkdir(parents=True)
    with pytest.raises(emulate.EmulationUnavailable, match="not an edgeopt aarch64 root"):
        emulate.ensure_root(mine)
    assert (mine / "etc").is_dir()
