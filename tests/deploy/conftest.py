"""Fixtures of the C++ deployment tests: the runner built per arch, small int8 artifacts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import edgeopt
from edgeopt import emulate
from edgeopt.deploy import DeployError, build_runner

INPUT_SHAPE = [1, 8, 8]


def _build(arch: str):
    try:
        return build_runner(arch)
    except (DeployError, emulate.EmulationUnavailable) as exc:
        pytest.skip(f"cannot build the {arch} C++ runner here: {exc}")


@pytest.fixture(scope="session")
def runner_x86_64():
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: apt-get install g++")
    return _build("x86_64")


@pytest.fixture(scope="session")
def aarch64_root():
    try:
        emulate.find_qemu()
        emulate.cross_compiler("g++")
        return emulate.ensure_root()
    except emulate.EmulationUnavailable as exc:
        pytest.skip(f"aarch64 emulation unavailable here: {exc}")


@pytest.fixture(scope="session")
def runner_aarch64(aarch64_root):
    return _build("aarch64")


@pytest.fixture(scope="session")
def images():
    """64 images in [0, 1], spread enough to exercise every int8 code."""
    return np.random.default_rng(0).random((64, *INPUT_SHAPE), dtype=np.float32)


@pytest.fixture(scope="session")
def int8_artifacts(make_cnn, images, tmp_path_factory):
    """An int8 TinyCNN compiled for ONNX Runtime, per target arch."""
    model = edgeopt.apply(make_cnn(seed=0, width=8, hidden=32), edgeopt.Int8Config(),
                          data=[images[:32], images[32:]])
    out = tmp_path_factory.mktemp("cpp-artifacts")
    return {arch: edgeopt.compile(model, target=arch, backend="onnxruntime",
                                  out=out / f"int8-{arch}", input_shape=INPUT_SHAPE).path
            for arch in ("x86_64", "aarch64")}
